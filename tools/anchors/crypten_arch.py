#!/usr/bin/env python3
"""CrypTen 0.4.1 on the CIFAR-sized architecture fixtures (fixtures/onnx/arch).

Run with the interpreter of the CrypTen anchor venv (made by ../shared/anchors/crypten/setup.sh),
from anywhere:

    "${ANCHOR_VENV:-/tmp/crypten-anchor/venv}/bin/python" tools/anchors/crypten_arch.py

Two parts:

1. Converter support matrix. Every ``*.onnx`` in fixtures/onnx/arch is given to CrypTen's own
   converter, ``crypten.nn.from_onnx(open(path, 'rb'))``, after the same torch-registry shim that the
   anchor's bench.py applies. Per file: imported yes/no, else the exception type and the first line
   of its message, plus static facts that explain it (ONNX op types CrypTen has no module for,
   non-float initializers). Only the import is tried, not a forward pass. Written (replaced) as JSON
   lines to docs/bench/results/crypten-arch-import.jsonl and printed as a table. It runs in one
   child process with a deadline.

2. Private inference, batch 1 (``resnet20-b1``, ``mobilenetv2-b1``), in exactly the setting of
   bench.py's ``lenet5_b1``: 3 OS processes (party 0, party 1, TTP dealer), gloo over 127.0.0.1,
   1 torch thread each, 5 timed runs after 1 warm-up, median wall, bytes per party from ``ss``,
   CrypTen's round count, clean-run/contamination logic, deadline, children killed by PID. This
   script does not re-implement any of that: it imports bench.py and registers two more workloads
   with it (bench.py's launcher starts *this* file as the worker). The model is
   ``crypten.nn.from_onnx`` of the fixture's TorchScript export ``NAME_ts.onnx`` (route
   ``from_onnx``). Party 0 owns the weights: party 1 zeroes every parameter it read from the file
   before ``encrypt(src=0)``, so only party 0's values reach the shares. Party 1 owns the input
   (sample 0 of ``NAME.input.npy``) and alone receives the revealed logits; ``max_abs_err`` is
   against onnxruntime's logits in ``NAME_ts.logits.npy`` (sample 0).
   The result lines have bench.py's fields plus ``route``, ``route_reason``, ``fixture`` and
   ``reference``. They are appended to docs/bench/results/crypten.jsonl when that file's lines use
   bench.py's field set (checked at run time), else to docs/bench/results/crypten-arch.jsonl.

Useful flags: ``--skip-matrix``, ``--skip-timing``, ``--only resnet20-b1``, ``--runs``,
``--warmup``, ``--deadline-s`` (whole timing part), ``--quiet-wait-s``, ``--provider TFP``,
``--out FILE`` (force the timing output file). Nothing under the anchor directory is modified
(bench.py's own results file goes to a temporary directory).
"""

from __future__ import annotations

import argparse
import datetime
import glob
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
FIXTURES = os.path.join(REPO, "fixtures", "onnx", "arch")
RESULTS = os.path.join(REPO, "docs", "bench", "results")
ANCHOR_DIR = os.environ.get("CRYPTEN_ANCHOR_DIR",
                            os.path.join(os.path.dirname(REPO), "shared", "anchors", "crypten"))

# workload name -> (model name in the fixtures, description)
ARCH_WORKLOADS = {
    "resnet20-b1": ("resnet20",
                    "CIFAR ResNet-20 (fixtures/onnx/arch/resnet20_ts.onnx, BN folded), 3x32x32, batch 1; "
                    "timed: party-1 input sharing + forward + reveal to party 1"),
    "mobilenetv2-b1": ("mobilenetv2",
                       "MobileNetV2 width 0.35 (fixtures/onnx/arch/mobilenetv2_ts.onnx, BN folded), 3x32x32, "
                       "batch 1; timed: party-1 input sharing + forward + reveal to party 1"),
}
ARCH_ID = "arch"


def load_bench():
    """Import the anchor's bench.py (read-only) and register our workloads with it."""
    if not os.path.exists(os.path.join(ANCHOR_DIR, "bench.py")):
        sys.exit(f"bench.py not found in {ANCHOR_DIR} (set CRYPTEN_ANCHOR_DIR)")
    sys.dont_write_bytecode = True  # leave no __pycache__ under the shared anchor directory
    sys.path.insert(0, ANCHOR_DIR)
    import bench

    for attr in ("WORKLOADS", "WORKLOAD_NAMES", "make_workload", "Workload", "main",
                 "import_crypten", "_decode_two_ways", "_errs"):
        if not hasattr(bench, attr):
            sys.exit(f"bench.py in {ANCHOR_DIR} has no {attr}: this script was written against the "
                     f"version that has it")
    # bench's launcher starts os.path.abspath(bench.__file__) as the worker: make that this file,
    # whose --_worker mode registers the same workloads and then runs bench.main().
    bench.__file__ = os.path.abspath(__file__)
    bench.WORKLOADS = list(bench.WORKLOADS) + [(n, ARCH_ID, d) for n, (_m, d) in ARCH_WORKLOADS.items()]
    bench.WORKLOAD_NAMES = [w[0] for w in bench.WORKLOADS]
    orig_make = bench.make_workload

    class ArchInference(bench.Workload):
        """Batch-1 private inference of an arch fixture through crypten.nn.from_onnx."""

        def __init__(self, crypten, rank, model_name):
            super().__init__(crypten, rank)
            self.model_name = model_name

        def setup(self):
            import numpy as np
            import torch

            path = os.path.join(FIXTURES, f"{self.model_name}_ts.onnx")
            self.route = "from_onnx"
            self.route_reason = (f"crypten.nn.from_onnx imports {os.path.basename(path)} "
                                 "(see crypten-arch-import.jsonl), so no torch module is rebuilt")
            t0 = time.perf_counter()
            try:
                with open(path, "rb") as f:
                    model = self.crypten.nn.from_onnx(f)
            except Exception as e:
                # The torch-module fallback (make_arch_fixtures.py's constructors + from_pytorch) is
                # not implemented: both ts fixtures imported when this was written, and that
                # generator needs torchvision + onnxruntime, which the anchor venv does not have.
                raise RuntimeError(f"from_onnx({os.path.basename(path)}) failed: {type(e).__name__}: "
                                   f"{str(e).splitlines()[0] if str(e) else ''}; no from_pytorch fallback "
                                   "implemented") from e
            self.import_s = time.perf_counter() - t0
            if self.rank != 0:  # only the owner's weights may reach the shares
                with torch.no_grad():
                    for p in model.parameters():
                        if torch.is_tensor(p):
                            p.zero_()
            t0 = time.perf_counter()
            model.encrypt(src=0)
            model.eval()
            self.model_share_s = time.perf_counter() - t0
            self.cmodel = model
            x = np.load(os.path.join(FIXTURES, f"{self.model_name}.input.npy"))[:1]
            self.x = torch.from_numpy(np.ascontiguousarray(x)).float()
            self.xin = self.x if self.rank == 1 else torch.zeros_like(self.x)
            self.ref = torch.from_numpy(
                np.load(os.path.join(FIXTURES, f"{self.model_name}_ts.logits.npy"))[:1]).double()

        def run(self):
            with self.crypten.no_grad():
                xe = self.crypten.cryptensor(self.xin, src=1)
                y = self.cmodel(xe)
                return y.encoder, y.reveal(dst=1)  # ring values to party 1 only

        def finish(self, out):
            self.extra = {"route": self.route, "route_reason": self.route_reason,
                          "onnx_import_s": round(self.import_s, 6),
                          "model_share_s": round(self.model_share_s, 6)}
            if self.rank != 1:
                return None
            pair = bench._decode_two_ways(*out)
            ref = self.ref
            self.extra["argmax_agree"] = float((pair[1].argmax(-1) == ref.argmax(-1)).double().mean())
            self.extra["max_abs_logit_ref"] = float(ref.abs().max())
            self.extra["logits_mpc_exact_decode"] = [round(float(v), 6) for v in pair[1].flatten()]
            self.extra["logits_ref"] = [round(float(v), 6) for v in ref.flatten()]
            return bench._errs(pair, ref)

    def make_workload(name, crypten, rank):
        if name in ARCH_WORKLOADS:
            return ArchInference(crypten, rank, ARCH_WORKLOADS[name][0])
        return orig_make(name, crypten, rank)

    bench.make_workload = make_workload
    return bench


# ---------------------------------------------------------------------------------- part 1


def _static_facts(path, crypten):
    """What the ONNX file holds that matters to CrypTen's converter (computed without it)."""
    import onnx
    from crypten.nn import onnx_converter

    m = onnx.load(path, load_external_data=False)
    ops = sorted({n.op_type for n in m.graph.node})
    unsupported = []
    for op in ops:
        try:
            onnx_converter._get_operator_class(op, {})
        except ValueError:
            unsupported.append(op)
    float_types = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16,
                   onnx.TensorProto.BFLOAT16}
    nonfloat = [f"{t.name}:{onnx.TensorProto.DataType.Name(t.data_type)}{list(t.dims)}"
                for t in m.graph.initializer if t.data_type not in float_types]
    n_ext = sum(1 for t in m.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL)
    return {
        "opset": {(o.domain or "ai.onnx"): o.version for o in m.opset_import}.get("ai.onnx"),
        "n_nodes": len(m.graph.node),
        "op_types": ops,
        "op_types_without_crypten_module": unsupported,
        "non_float_initializers": nonfloat,
        "n_external_initializers": n_ext,
    }


def matrix_child(out_path):
    """Runs in its own process: try from_onnx on every fixture, write JSON lines."""
    import warnings

    warnings.filterwarnings("ignore")
    bench = load_bench()
    import torch

    torch.set_num_threads(1)
    crypten, shims = bench.import_crypten()
    import onnx

    date = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    rows = []
    for path in sorted(glob.glob(os.path.join(FIXTURES, "*.onnx"))):
        fname = os.path.basename(path)
        stem = fname[:-len(".onnx")]
        model, exp = None, None
        for e in ("ts_bn", "dynamo", "ts"):
            if stem.endswith("_" + e):
                model, exp = stem[:-len(e) - 1], e
                break
        row = {"file": f"fixtures/onnx/arch/{fname}", "model": model, "exporter": exp,
               "call": "crypten.nn.from_onnx(open(path, 'rb'))"}
        try:
            row.update(_static_facts(path, crypten))
        except Exception as e:  # noqa: BLE001
            row["static_facts_error"] = f"{type(e).__name__}: {e}"
        t0 = time.perf_counter()
        try:
            with open(path, "rb") as f:
                cm = crypten.nn.from_onnx(f)
            row.update({"imported": True, "error_type": None, "error": None,
                        "crypten_model_class": type(cm).__name__,
                        "n_crypten_modules": len(list(cm.modules()))})
        except Exception as e:  # noqa: BLE001 - recorded
            tb = traceback.extract_tb(e.__traceback__)
            where = tb[-1] if tb else None
            row.update({"imported": False, "error_type": type(e).__name__,
                        "error": str(e).splitlines()[0] if str(e) else "",
                        "error_at": None if where is None else
                        f"{os.path.relpath(where.filename, os.path.dirname(os.path.dirname(crypten.__file__)))}"
                        f":{where.lineno} ({where.name})"})
        row["import_s"] = round(time.perf_counter() - t0, 3)
        row.update({"crypten_version": crypten.__version__, "torch_version": torch.__version__,
                    "onnx_version": onnx.__version__, "shims": shims, "date_utc": date})
        rows.append(row)
        print(f"[matrix] {fname}: {'ok' if row['imported'] else row['error_type']}", file=sys.stderr,
              flush=True)
    with open(out_path + ".tmp", "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    os.replace(out_path + ".tmp", out_path)
    return 0


def print_matrix(path):
    rows = [json.loads(x) for x in open(path) if x.strip()]
    print(f"\nCrypTen {rows[0]['crypten_version'] if rows else '?'} converter, crypten.nn.from_onnx:")
    hdr = f"{'file':<26} {'opset':>5} {'imported':<8}  error / unsupported ops"
    print(hdr)
    print("-" * 100)
    for r in rows:
        f = os.path.basename(r["file"])
        if r["imported"]:
            msg = ""
        else:
            msg = f"{r['error_type']}: {r['error']}"
            extra = []
            if r.get("op_types_without_crypten_module"):
                extra.append("ops without module: " + ",".join(r["op_types_without_crypten_module"]))
            if r.get("non_float_initializers"):
                extra.append(f"{len(r['non_float_initializers'])} non-float initializer(s), first "
                             + r["non_float_initializers"][0])
            if extra:
                msg += "  [" + "; ".join(extra) + "]"
        print(f"{f:<26} {str(r.get('opset')):>5} {'yes' if r['imported'] else 'NO':<8}  {msg}")
    n = sum(r["imported"] for r in rows)
    print(f"{n}/{len(rows)} imported\n")


def run_matrix(args):
    out = os.path.join(RESULTS, "crypten-arch-import.jsonl")
    cmd = [sys.executable, os.path.abspath(__file__), "--_matrix", out]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    p = subprocess.Popen(cmd, env=env)
    try:
        rc = p.wait(timeout=args.matrix_deadline_s)
    except subprocess.TimeoutExpired:
        p.kill()  # our own child, by PID
        p.wait(timeout=10)
        print(f"# matrix: timed out after {args.matrix_deadline_s} s", file=sys.stderr)
        return 1
    if rc == 0 and os.path.exists(out):
        print_matrix(out)
        print(f"# wrote {out}", file=sys.stderr)
    return rc


# ---------------------------------------------------------------------------------- part 2


def _compatible_target(new_lines):
    """crypten.jsonl if its lines use bench.py's field names (every field any existing line has is
    also in ours, except 'extra', which is optional in bench.py), else crypten-arch.jsonl."""
    main = os.path.join(RESULTS, "crypten.jsonl")
    alt = os.path.join(RESULTS, "crypten-arch.jsonl")
    try:
        old = [json.loads(x) for x in open(main) if x.strip()]
    except (OSError, ValueError) as e:
        return alt, f"crypten.jsonl unreadable ({type(e).__name__})"
    if not old:
        return alt, "crypten.jsonl empty"
    ok_new = [x for x in new_lines if "error" not in x]
    if not ok_new:
        return alt, "no successful line to compare"
    old_keys = set().union(*(set(x) for x in old if "error" not in x)) - {"extra"}
    missing = old_keys - set(ok_new[0])
    if missing:
        return alt, f"fields of crypten.jsonl missing from ours: {sorted(missing)}"
    return main, "crypten.jsonl uses bench.py's field set; ours adds " + \
        ", ".join(sorted(set(ok_new[0]) - old_keys - {"extra"}))


def run_timing(args):
    names = [n for n in args.only.split(",") if n]
    bad = [n for n in names if n not in ARCH_WORKLOADS]
    if bad:
        sys.exit(f"unknown workload(s) {bad}; known: {list(ARCH_WORKLOADS)}")
    tmp = tempfile.mkdtemp(prefix="crypten-arch-", dir="/tmp")
    argv = [os.path.abspath(__file__), "--only", ",".join(names), "--provider", args.provider,
            "--runs", str(args.runs), "--warmup", str(args.warmup), "--threads", str(args.threads),
            "--deadline-s", str(args.deadline_s), "--quiet-wait-s", str(args.quiet_wait_s),
            "--max-attempts", str(args.max_attempts), "--out-dir", tmp]
    bench = load_bench()
    sys.argv = argv
    try:
        bench.main()
        rc = 0
    except SystemExit as e:
        rc = e.code if isinstance(e.code, int) else 1
    lines = []
    for f in sorted(glob.glob(os.path.join(tmp, "results-*.jsonl"))):
        lines += [json.loads(x) for x in open(f) if x.strip()]
    for line in lines:
        extra = line.get("extra") or {}
        model = ARCH_WORKLOADS[line["workload"]][0]
        line["route"] = extra.pop("route", "from_onnx")
        line["route_reason"] = extra.pop("route_reason", None)
        line["fixture"] = f"fixtures/onnx/arch/{model}_ts.onnx"
        line["reference"] = (f"onnxruntime logits fixtures/onnx/arch/{model}_ts.logits.npy, sample 0 "
                             f"(input {model}.input.npy[0:1])")
        line["harness"] = "tools/anchors/crypten_arch.py (bench.py's launcher, timing and byte counting)"
    target, why = (args.out, "--out given") if args.out else _compatible_target(lines)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with open(target, "a") as f:
        for line in lines:
            f.write(json.dumps(line) + "\n")
    print(f"# appended {len(lines)} line(s) to {target} ({why})", file=sys.stderr)
    print("\nworkload         route      wall s med  wall s min  clean  MB sent/party  rounds  "
          "TTP->p0 MB  max abs err  (exact decode)  argmax")
    for x in lines:
        if "error" in x:
            print(f"{x['workload']:<16} ERROR {x['error']}")
            continue
        mb = lambda v: "—" if v is None else f"{v / 1e6:.3f}"  # noqa: E731
        print(f"{x['workload']:<16} {x['route']:<10} {x['wall_s_median']:>10.3f}  {x['wall_s_min']:>10.3f}  "
              f"{sum(x['run_clean'])}/{len(x['run_clean'])}    {mb(x['bytes_sent_per_party']):>13}  "
              f"{str(x['rounds']):>6}  {mb(x['ttp_bytes_to_p0']):>10}  {x['max_abs_err']:>11.2e}  "
              f"{x['max_abs_err_exact_decode']:>14.2e}  {x.get('extra', {}).get('argmax_agree')}")
    return rc


def main():
    if "--_worker" in sys.argv:  # started by bench.py's launcher
        bench = load_bench()
        sys.argv[0] = os.path.abspath(__file__)
        bench.main()
        return
    if len(sys.argv) == 3 and sys.argv[1] == "--_matrix":
        sys.exit(matrix_child(sys.argv[2]))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--skip-matrix", action="store_true")
    ap.add_argument("--skip-timing", action="store_true")
    ap.add_argument("--only", default=",".join(ARCH_WORKLOADS), help="subset of " + ",".join(ARCH_WORKLOADS))
    ap.add_argument("--provider", default="TTP", choices=["TTP", "TFP"])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--deadline-s", type=float, default=2400, help="hard limit for the timing part")
    ap.add_argument("--quiet-wait-s", type=float, default=600)
    ap.add_argument("--max-attempts", type=int, default=3)
    ap.add_argument("--matrix-deadline-s", type=float, default=600)
    ap.add_argument("--out", default=None, help="timing output file (default: decided by field check)")
    args = ap.parse_args()
    t0 = time.time()
    rc = 0
    if not args.skip_matrix:
        rc |= run_matrix(args) != 0
    if not args.skip_timing:
        rc |= run_timing(args) != 0
    print(f"# total {time.time() - t0:.0f} s", file=sys.stderr)
    sys.exit(int(rc))


if __name__ == "__main__":
    main()
