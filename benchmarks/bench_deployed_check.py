"""How far a right int8 CPU path, and a wrong one, read from the Q/DQ graph on live M0s.

    python -m benchmarks.bench_deployed_check --seeds 5

For each seed, a live random M0 (``evit.live``) on the 16 random images ``--target auto``
checks paths on (``search.autotarget``): the relative error of the Q/DQ graph run as written
against fp32 (the quantization's own), of each int8 CPU path's logits against that graph, and
of twice the path's logits (a runtime with a wrong output scale). ``edge.quantize``'s
``QUANTIZATION_ERROR_CAP`` sits between the right paths and the doubled logits.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import onnx

from benchmarks.common import save


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=5, help="live M0s, seeds 0..N-1 (5)")
    p.add_argument("--tiny", action="store_true", help="the test suite's tiny config, not M0")
    args = p.parse_args(argv)

    from edge.quantize import compare_deployed, logit_agreement, run_reference
    from evit.live import live_model
    from search.autotarget import CHECK_IMAGES, _outputs, cpu_paths
    from search.space import reference_configs
    from search.targets import Target

    config = reference_configs()["efficientvit_m0"]
    if args.tiny:
        from tests.conftest import tiny_config

        config = tiny_config(name="efficientvit_m0")
    size = config.img_size
    images = np.random.default_rng(1).standard_normal((CHECK_IMAGES, 3, size, size))
    batches = [x[None] for x in images.astype(np.float32)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for seed in range(args.seeds):
            live = live_model(config, seed=seed)
            fp32 = Target("ort-cpu", threads=1, workdir=work).prepare(config, model=live)
            expected = _outputs(fp32, batches)
            for name, _ in cpu_paths("int8"):
                factory = Target(name, precision="int8", threads=1, workdir=work).prepare(
                    config, model=live
                )
                got = _outputs(factory, batches)
                reference = run_reference(onnx.ModelProto.FromString(factory.source), batches)
                check = compare_deployed(got, reference, expected, name)
                row = {
                    "seed": seed,
                    "path": name,
                    "quantization_rel_error": check.quantization_rel_error,
                    "path_rel_error": check.rel_error,
                    "doubled_rel_error": logit_agreement(2 * got, reference).rel_error,
                    "passed": check.passed,
                }
                rows.append(row)
                print(
                    f"seed {seed} {name:13s} own {row['quantization_rel_error']:.3f}  path "
                    f"{row['path_rel_error']:.3f}  doubled {row['doubled_rel_error']:.3f}  "
                    f"{'agrees' if check.passed else 'DISAGREES'}",
                    flush=True,
                )
    print(f"saved {save('deployed_check_tiny' if args.tiny else 'deployed_check', {'rows': rows})}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
