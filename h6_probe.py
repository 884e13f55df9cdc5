"""Temporary (helper h6): cross-machine fbank differences vs the x86 golden, on CPU and CUDA, and live torchaudio."""
import json, sys, numpy as np, torch
sys.path.insert(0, "tests/data")
from make_kaldi_golden import make_waveform, GOLDEN
from patches import kaldi
import torchaudio.compliance.kaldi as real
z = np.load(GOLDEN)
print(torch.__version__, torch.backends.mkl.is_available(), open("/proc/cpuinfo").read().split("model name")[1].split("\n")[0])
for dev in ["cpu", "cuda"]:
    for c in json.loads(str(z["cases"])):
        if "error" in c: continue
        w = torch.from_numpy(make_waveform(c["length"], c.get("channels", 1), c.get("seed", 0), c.get("scale", 1.0), c.get("dtype", "float32"))).to(dev)
        torch.manual_seed(c.get("rng_seed", 0))
        ours = getattr(kaldi, c["function"])(w, **c["kwargs"]).cpu().numpy()
        live = None
        if dev == "cpu":
            torch.manual_seed(c.get("rng_seed", 0))
            live = getattr(real, c["function"])(w, **c["kwargs"]).numpy()
        g = z[c["name"]]
        if g.size == 0: continue
        d = np.abs(ours.astype(np.float64) - g)
        rk = c["name"] + "/float32_rounding"
        tol = 1e-4 + 1e-5 * np.abs(g) + 3 * (z[rk] if rk in z.files else 0)
        bad = d > tol
        i = np.unravel_index(d.argmax(), d.shape)
        extra = f" live_maxdiff={np.abs(live - ours).max():.2e}" if live is not None else ""
        print(f"{dev} {c['name']:45s} max={d.max():.2e} at {i} val={g[i]:.3f} ratio={np.max(d / tol):.2f} nbad={bad.sum()}/{g.size}{extra}")
