"""The package's import graph, read from its source with ``ast``: every import counts, at the top,
inside a function or under ``TYPE_CHECKING``. A file is a node (a package's ``__init__.py`` too);
``from lit_ssgan.x import y`` is an arrow to ``x/y.py`` where ``y`` is a submodule, else to ``x``.
No arrows may make a circle, none may go up a floor (:data:`FLOORS`), and nothing inside the package
imports the package itself (``lit_ssgan/__init__.py``)."""

from __future__ import annotations

import ast
import subprocess
import sys
from fnmatch import fnmatch
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "lit_ssgan"

#: each file's floor, by its path in the package (fnmatch patterns): a file imports only files of
#: its own floor or lower ones
FLOORS: dict[int, tuple[str, ...]] = {
    # imports nothing of the package
    0: ("errors.py", "internals.py", "files.py", "_version.py", "warning_filters.py", "precision.py"),
    # the parts: networks, losses, gradients, metrics, data, checkpoint files
    1: (
        "models/*.py",
        "losses.py",
        "consistency.py",
        "parts.py",
        "training.py",
        "gradients.py",
        "divergence.py",
        "averaging.py",
        "metrics.py",
        "lr_schedulers.py",
        "compiling.py",
        "images.py",
        "outputs.py",
        "checkpoint.py",
        "random_state.py",
        "resuming.py",
        "data/*.py",
    ),
    # what the callbacks may read of the module, typed with the parts
    2: ("protocols.py", "evaluation.py"),
    # the callbacks: they read the module through the protocol, never the module itself
    3: ("callbacks/*.py",),
    4: ("module.py",),
    # the commands
    5: ("cli.py", "export.py", "sample_grid.py", "draws/*.py"),
    # the package's face: imported by nobody inside it
    6: ("__init__.py", "__main__.py"),
}

Graph = dict[str, set[str]]  # a file (its path in the package) -> the files it imports


def dotted(path: Path, root: Path) -> str:
    """``root/a/b.py`` -> ``pkg.a.b``; ``root/a/__init__.py`` -> ``pkg.a`` (``pkg``: root's name)."""
    parts = [root.name, *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path, module: str, modules: set[str]) -> set[str]:
    """The modules of ``modules`` that ``path`` (the module ``module``) imports: ``from x import y``
    is ``x.y`` where that is a module, else ``x``; relative imports are made absolute."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the file's package, one level up per dot after the first
                package = (module if path.name == "__init__.py" else module.rpartition(".")[0]).split(".")
                base = ".".join([*package[: len(package) - node.level + 1], *([base] if base else [])])
            found |= {f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names}
    return (found & modules) - {module}


def import_graph(root: Path = PACKAGE) -> Graph:
    """Every ``.py`` file under ``root`` and the files of the package it imports."""
    paths = {dotted(path, root): path for path in sorted(root.rglob("*.py"))}
    file = {module: path.relative_to(root).as_posix() for module, path in paths.items()}
    return {file[m]: {file[t] for t in imported(path, m, set(paths))} for m, path in paths.items()}


def circles(graph: Graph) -> list[list[str]]:
    """The strongly connected components of more than one file (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def floors_of(files: list[str], table: dict[int, tuple[str, ...]] = FLOORS) -> tuple[dict[str, int], list[str]]:
    """Each file's floor in ``table``, and what is wrong with it: files with no floor or with two."""
    floor: dict[str, int] = {}
    problems = []
    for file in files:
        matched = sorted({level for level, patterns in table.items() for p in patterns if fnmatch(file, p)})
        if len(matched) == 1:
            floor[file] = matched[0]
        else:
            problems.append(f"{file}: {'no floor' if not matched else f'floors {matched}'} in FLOORS")
    return floor, problems


def upward_arrows(graph: Graph, floor: dict[str, int]) -> list[str]:
    """The arrows from a file to one of a higher floor, and every arrow to the package itself."""
    return [
        f"{source} (floor {floor[source]}) -> {target} (floor {floor[target]})"
        for source, targets in sorted(graph.items())
        for target in sorted(targets)
        if source in floor and target in floor and (floor[target] > floor[source] or target == "__init__.py")
    ]


# -- the package ------------------------------------------------------------------------------


def test_every_file_of_the_package_has_one_floor():
    _, problems = floors_of(sorted(import_graph()))
    assert problems == [], "\n".join(problems)


def test_no_files_of_the_package_import_each_other_in_a_circle():
    graph = import_graph()
    found = circles(graph)
    arrows = [f"{a} -> {b}" for component in found for a in component for b in sorted(graph[a]) if b in component]
    assert found == [], f"{len(found)} circles; their arrows:\n" + "\n".join(arrows)


def test_no_file_imports_one_of_a_higher_floor_and_none_the_package_itself():
    graph = import_graph()
    floor, _ = floors_of(sorted(graph))
    offending = upward_arrows(graph, floor)
    assert offending == [], f"{len(offending)} arrows up a floor or to the package itself:\n" + "\n".join(offending)


# -- the reader and the checks, on a package made here ----------------------------------------


def write_package(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / "pkg" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "pkg"


def test_the_reader_sees_imports_in_functions_under_type_checking_relative_and_of_submodules(tmp_path):
    package = write_package(
        tmp_path,
        {
            "__init__.py": "from pkg.top import VALUE\n",
            "top.py": "import pkg.sub.low as low\nVALUE = 1\n",
            "late.py": "def f():\n    from pkg.top import VALUE\n",
            "typed.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.sub import low\n",
            "name.py": "from pkg.sub import NAME\n",
            "version.py": "import pkg\n",
            "sub/__init__.py": "NAME = 1\n",
            "sub/low.py": "from . import other\nfrom .. import top\nimport os\n",
            "sub/other.py": "from .low import *\n",
        },
    )
    assert import_graph(package) == {
        "__init__.py": {"top.py"},
        "top.py": {"sub/low.py"},
        "late.py": {"top.py"},
        "typed.py": {"sub/low.py"},
        "name.py": {"sub/__init__.py"},  # a name, not a submodule: the package that holds it
        "version.py": {"__init__.py"},
        "sub/__init__.py": set(),
        "sub/low.py": {"sub/other.py", "top.py"},
        "sub/other.py": {"sub/low.py"},
    }


def test_the_checks_report_each_circle_and_each_arrow_up_or_to_the_package(tmp_path):
    package = write_package(
        tmp_path,
        {
            "__init__.py": "",
            "a.py": "import pkg.b\n",
            "b.py": "def f():\n    import pkg.a\n",
            "c.py": "import pkg\nimport pkg.high\n",
            "high.py": "from pkg import c\n",
            "stray.py": "",
        },
    )
    graph = import_graph(package)
    assert circles(graph) == [["a.py", "b.py"], ["c.py", "high.py"]]
    table = {0: ("a.py", "b.py", "c.py", "high.py"), 1: ("high.py",), 2: ("__init__.py",)}
    floor, problems = floors_of(sorted(graph), table)
    assert problems == ["high.py: floors [0, 1] in FLOORS", "stray.py: no floor in FLOORS"]
    floor["high.py"] = 1
    assert upward_arrows(graph, floor) == [
        "c.py (floor 0) -> __init__.py (floor 2)",
        "c.py (floor 0) -> high.py (floor 1)",
    ]


def test_importing_the_package_imports_none_of_its_parts_until_a_name_is_used():
    """``import lit_ssgan`` (which ``python -m lit_ssgan`` and the console commands do first) takes
    no torch and no Lightning, so that a Ctrl-C in their imports reaches lit_ssgan.__main__; its
    names load on first use."""
    script = (
        "import sys, lit_ssgan\n"
        "print(sorted(m for m in ('torch', 'lightning', 'albumentations') if m in sys.modules))\n"
        "print(lit_ssgan.SemiSupervisedGAN.__module__, lit_ssgan.ImageFolderDataModule.__module__)\n"
        "print(set(lit_ssgan.__all__) <= set(dir(lit_ssgan)), hasattr(lit_ssgan, 'no_such_name'))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.splitlines() == [
        "[]",
        "lit_ssgan.module lit_ssgan.data.image_folder",
        "True False",
    ]
