"""A Linux process's peak resident memory (VmHWM), as the foundation
benchmarks read it for LayerFL's processes and for PyTorch's."""


def status_kb(pid="self", field="VmHWM:"):
    """The field of /proc/PID/status in kB; None once the process is gone."""
    try:
        with open("/proc/%s/status" % pid) as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak():
    """Restarts this process's VmHWM from its current RSS."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
