"""tasic.isa_sim: functional and cycle-level simulation of tasic binaries.

>>> result = simulate(binary, load_target("tiny"), {"x": x})
>>> result.outputs["y"], result.report.total_cycles
"""

from tasic.isa_sim.errors import SimError
from tasic.isa_sim.report import OpStat, Report, TraceEvent, write_chrome_trace
from tasic.isa_sim.simulator import SimResult, simulate, simulate_timing

__all__ = [
    "OpStat",
    "Report",
    "SimError",
    "SimResult",
    "TraceEvent",
    "simulate",
    "simulate_timing",
    "write_chrome_trace",
]
