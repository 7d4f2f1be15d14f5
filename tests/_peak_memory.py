"""Peak resident memory of a child interpreter, measured by the child itself."""

from __future__ import annotations

#: Python source that defines ``peak_rss_bytes()`` in the child. On Linux, ``ru_maxrss``
#: survives ``execve``: a child started by a large pytest process reports the parent's peak
#: (CI once read 2.01 GiB for a run that used 0.8). ``VmHWM`` belongs to the child's own
#: address space, so it is read first; ``ru_maxrss`` (bytes on macOS) is the fallback.
PEAK_RSS_SOURCE = """
def peak_rss_bytes():
    import resource, sys
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024
"""
