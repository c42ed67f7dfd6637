import cProfile, pstats, sys, tempfile, time
from pathlib import Path
sys.path.insert(0, "tests/stages")
import conftest as c
from edgekd.config import DataConfig
from edgekd.data import load
splits = load(DataConfig(), 0)
d = Path(tempfile.mkdtemp())
qat = c.make_context(d / "qat", c.QAT, splits)
te = c.run_stage("teacher", qat.pipeline.teacher, {}, qat)
di = c.run_stage("distill", qat.pipeline.stage("distill"), {"teacher": te}, qat)
import torchao.quantization.pt2e
t=time.time()
cProfile.run('c.run_stage("quantize", qat.pipeline.stage("quantize"), {"teacher": te, "distill": di}, qat)', "/tmp/q.prof")
print("quantize", time.time()-t)
pstats.Stats("/tmp/q.prof").sort_stats("cumulative").print_stats(40)
