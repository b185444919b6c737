"""tasic.isa_sim: functional and cycle-level simulation of tasic binaries.

>>> result = simulate(binary, load_target("tiny"), {"x": x})
>>> result.outputs["y"], result.report.total_cycles

A `Machine` keeps HBM between runs of several entry points (prefill, then decode on the same KV cache):

>>> machine = Machine(binary, load_target("tiny"))
>>> machine.run("prefill", {"ids": prompt}); machine.run("decode", {"ids": token}).outputs["logits"]
"""

from tasic.isa_sim.errors import SimError
from tasic.isa_sim.report import OpStat, Report, TraceEvent, write_chrome_trace
from tasic.isa_sim.simulator import Machine, SimResult, simulate, simulate_timing

__all__ = [
    "Machine",
    "OpStat",
    "Report",
    "SimError",
    "SimResult",
    "TraceEvent",
    "simulate",
    "simulate_timing",
    "write_chrome_trace",
]
