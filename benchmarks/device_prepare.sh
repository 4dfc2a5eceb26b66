#!/usr/bin/env bash
# Run HERE (the CPU side), before benchmarks/device.sh goes to a GPU machine: only the checkout reaches
# that machine, not ../shared, so this copies what the run needs into .dev/ (ignored by git through
# .git/info/exclude; the device tool carries it when asked to: carry [".dev"]):
#   .dev/whl/             the py3.12 wheels of the packages that machine's image lacks (../shared/device/wheels)
#   .dev/mnist/           MNIST's four .gz files (../shared/data/mnist)
#   .dev/shared/reference the plain loops the figures are measured against (../shared/reference)
# ../shared/device/README.md says what that machine has and how this was first done by hand.
#
#   bash benchmarks/device_prepare.sh            # then: device run, carry [".dev"], bash benchmarks/device.sh
set -euo pipefail
cd "$(dirname "$0")/.."
shared=${SHARED:-../shared}

for need in "$shared/device/wheels" "$shared/data/mnist" "$shared/reference"; do
    [[ -d $need ]] || { echo "device_prepare.sh: no $need" >&2; exit 1; }
done

exclude=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$exclude")"
grep -qxF /.dev/ "$exclude" 2>/dev/null || echo /.dev/ >>"$exclude"

rm -rf .dev/whl .dev/mnist .dev/shared
mkdir -p .dev/whl .dev/mnist .dev/shared
cp "$shared"/device/wheels/*.whl .dev/whl/
cp "$shared"/data/mnist/*.gz .dev/mnist/
cp -r "$shared/reference" .dev/shared/

if [[ -n $(git status --porcelain --ignored=no -- .dev) ]]; then
    echo "device_prepare.sh: git does not ignore .dev/" >&2
    exit 1
fi
echo ".dev/ ready: $(du -sh .dev | cut -f1) in $(find .dev -type f | wc -l) files (the working tree that travels" \
    "is limited to 64 MiB): $(find .dev/whl -name '*.whl' | wc -l) wheels, MNIST, the plain loops:" \
    "$(cd .dev/shared/reference && echo *)"
