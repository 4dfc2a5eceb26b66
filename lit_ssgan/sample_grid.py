"""``lit-ssgan-samples``: a grid of generated images from a checkpoint, as a PNG."""

from __future__ import annotations

import argparse
from pathlib import Path

from lit_ssgan.checkpoint import load_checkpoint_file
from lit_ssgan.errors import check_positive, exit_on_user_error
from lit_ssgan.images import make_grid, save_grid
from lit_ssgan.module import SemiSupervisedGAN
from lit_ssgan.outputs import check_output_file

#: what OpenCV writes, by the file's extension
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def write_sample_grid(ckpt_path: str | Path, out: str | Path, num_images: int = 64, seed: int = 0) -> Path:
    """Writes ``num_images`` images of the checkpoint's generator (latent codes drawn with
    ``seed``) as one grid PNG at ``out``; images under 32 px are enlarged. The checkpoint must be
    one the ``lit-ssgan`` command wrote (it holds the networks' config); it is loaded safely."""
    check_positive("num_images", num_images)
    load_checkpoint_file(ckpt_path)  # a missing, corrupt or unsafe file gets its own message
    model = SemiSupervisedGAN.load_from_checkpoint(str(ckpt_path), map_location="cpu", weights_only=True)
    images = model.generator.sample_images(num_images, seed=seed).float()
    out = Path(out)
    save_grid(make_grid(images), images.shape[-1], out)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="lit-ssgan-samples", description=__doc__, allow_abbrev=False)
    parser.add_argument("--ckpt_path", required=True, help="a checkpoint written by lit-ssgan")
    parser.add_argument("--out", default="samples.png", help="the PNG to write (default: samples.png)")
    parser.add_argument("--num_images", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0, help="seed of the latent codes")
    args = parser.parse_args(argv)
    with exit_on_user_error(parser.prog):
        check_output_file(args.out, "--out", PICTURE_SUFFIXES)
        out = write_sample_grid(args.ckpt_path, args.out, args.num_images, args.seed)
    print(f"{args.num_images} generated images written to {out}")


if __name__ == "__main__":
    main()
