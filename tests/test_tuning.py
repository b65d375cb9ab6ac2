"""survey_cracks.tuning: each speed-up does what it claims, and the one switch turns it off."""

import ast
import importlib.util
import sys
from pathlib import Path

import pytest

from survey_cracks import tuning
from tests.conftest import run_in_fresh_python


def names_torchvision_takes_from_dynamo_utils() -> set[str]:
    """What the installed torchvision's ops.roi_align imports from torch._dynamo.utils (read, not imported)."""
    source = Path(importlib.util.find_spec("torchvision").origin).parent / "ops" / "roi_align.py"
    tree = ast.parse(source.read_text())
    return {alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module == "torch._dynamo.utils"
            for alias in node.names}


@pytest.mark.parametrize("setting, heap_trim, deferred_dynamo", [
    (None, True, True), ("on", True, True), ("off", False, False), ("0", False, False),
    ("-heap_trim", False, True), ("-deferred_dynamo, -heap_trim", False, False),
])
def test_the_switch_turns_all_or_one_off(monkeypatch, setting, heap_trim, deferred_dynamo):
    if setting is None:
        monkeypatch.delenv(tuning.SWITCH, raising=False)
    else:
        monkeypatch.setenv(tuning.SWITCH, setting)
    assert (tuning.enabled("heap_trim"), tuning.enabled("deferred_dynamo")) == (heap_trim, deferred_dynamo)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_trim_heap_gives_freed_heap_back_that_glibc_would_keep():
    """Freed blocks below the heap's top stay resident until trimmed: what a worker holds after a raster."""
    script = """
import numpy as np, psutil
from survey_cracks.tuning import trim_heap
rss = lambda: psutil.Process().memory_info().rss / 2**20
blocks = [np.ones(100_000 // 8) for _ in range(3000)]  # ~300 MB of 100 kB heap blocks (under mmap's threshold)
keep = blocks[-1]
del blocks  # all freed but the top one, so glibc cannot shrink the heap by itself
before = rss()
print(trim_heap(), round(before - rss()))
"""
    trimmed, given_back = run_in_fresh_python(script, timeout=120).split()
    assert trimmed == "True" and float(given_back) > 200, f"only {given_back} MB given back"
    trimmed, given_back = run_in_fresh_python(script, timeout=120, env={tuning.SWITCH: "-heap_trim"}).split()
    assert trimmed == "False" and float(given_back) < 50, "the switch left the trim on"


NETWORK_RUN = (
    "import sys\n"
    "import numpy as np\n"
    "from survey_cracks import tuning\n"
    "from survey_cracks.models.network import CrackClassifier\n"
    "CrackClassifier().segment(np.zeros((256, 256, 3), np.uint8))\n"
    "print('torch._dynamo' in sys.modules, ','.join(tuning.dynamo_gave_way) or '-')\n"
)


def test_building_and_running_the_network_does_not_load_torch_dynamo():
    """A worker imports torchvision for ResNet18 and the FPN only: TorchDynamo (1.2 s) stays unloaded
    until something calls it, and then the real one answers. A torchvision that takes more from
    torch._dynamo.utils than the one helper gets the real module: the saving is lost, and said."""
    taken = names_torchvision_takes_from_dynamo_utils()
    loaded, gave_way = run_in_fresh_python(NETWORK_RUN).split()
    if taken <= {"is_compile_supported"}:
        assert (loaded, gave_way) == ("False", "-")
        out = run_in_fresh_python(
            NETWORK_RUN + "roi_align = sys.modules['torchvision.ops.roi_align']\n"
            "print(roi_align.is_compile_supported('cpu'), 'torch._dynamo' in sys.modules)\n"
            "print(sys.modules['torch._dynamo.utils'].__file__.endswith('utils.py'))\n")
        assert out.splitlines()[1:] == ["True True", "True"]
    else:
        assert loaded == "True" and set(gave_way.split(",")) == taken - {"is_compile_supported"}


def test_with_the_switch_off_torchvision_loads_torch_dynamo_as_it_would():
    loaded, gave_way = run_in_fresh_python(NETWORK_RUN, env={tuning.SWITCH: "off"}).split()
    assert (loaded, gave_way) == ("True", "-")


def test_any_other_name_taken_from_the_stand_in_is_torch_dynamos_own():
    out = run_in_fresh_python(
        "import sys, collections\n"
        "from survey_cracks.tuning import deferred_torch_dynamo, dynamo_gave_way\n"
        "with deferred_torch_dynamo():\n"
        "    from torch._dynamo.utils import counters\n"
        "print(type(counters) is collections.defaultdict, sys.modules['torch._dynamo.utils'].counters is counters,"
        " dynamo_gave_way)\n"
    )
    assert out == "True True ['counters']"
