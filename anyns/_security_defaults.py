"""The hardening defaults, as plain data: shared by the spec (validation) and the plan and filter (``_security``).

No imports: the spec layer loads this, and so may the zygote.
"""

#: capability(7) numbers by name
CAPABILITIES = {
    "CAP_CHOWN": 0, "CAP_DAC_OVERRIDE": 1, "CAP_DAC_READ_SEARCH": 2, "CAP_FOWNER": 3, "CAP_FSETID": 4,
    "CAP_KILL": 5, "CAP_SETGID": 6, "CAP_SETUID": 7, "CAP_SETPCAP": 8, "CAP_LINUX_IMMUTABLE": 9,
    "CAP_NET_BIND_SERVICE": 10, "CAP_NET_BROADCAST": 11, "CAP_NET_ADMIN": 12, "CAP_NET_RAW": 13,
    "CAP_IPC_LOCK": 14, "CAP_IPC_OWNER": 15, "CAP_SYS_MODULE": 16, "CAP_SYS_RAWIO": 17, "CAP_SYS_CHROOT": 18,
    "CAP_SYS_PTRACE": 19, "CAP_SYS_PACCT": 20, "CAP_SYS_ADMIN": 21, "CAP_SYS_BOOT": 22, "CAP_SYS_NICE": 23,
    "CAP_SYS_RESOURCE": 24, "CAP_SYS_TIME": 25, "CAP_SYS_TTY_CONFIG": 26, "CAP_MKNOD": 27, "CAP_LEASE": 28,
    "CAP_AUDIT_WRITE": 29, "CAP_AUDIT_CONTROL": 30, "CAP_SETFCAP": 31, "CAP_MAC_OVERRIDE": 32,
    "CAP_MAC_ADMIN": 33, "CAP_SYSLOG": 34, "CAP_WAKE_ALARM": 35, "CAP_BLOCK_SUSPEND": 36, "CAP_AUDIT_READ": 37,
    "CAP_PERFMON": 38, "CAP_BPF": 39, "CAP_CHECKPOINT_RESTORE": 40,
}
#: what Docker leaves a container (moby's oci/caps/defaults.go)
DEFAULT_CAPABILITIES = frozenset({
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW", "CAP_SETGID",
    "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL",
    "CAP_AUDIT_WRITE",
})
ALL_CAPABILITIES = frozenset(CAPABILITIES)

#: notable syscalls Docker's default seccomp profile refuses a container with ``DEFAULT_CAPABILITIES``
#: (the filter is an allow-list: everything it does not list is refused too). Some become allowed with a
#: capability (bpf with CAP_BPF, reboot with CAP_SYS_BOOT …); ``Seccomp(deny=DEFAULT_DENIED)`` refuses
#: them whatever the capabilities.
DEFAULT_DENIED = frozenset({
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module", "create_module",
    "keyctl", "add_key", "request_key", "bpf", "perf_event_open", "userfaultfd", "acct", "swapon", "swapoff",
    "reboot", "lookup_dcookie", "uselib", "nfsservctl", "open_by_handle_at", "iopl", "ioperm", "quotactl",
    "get_kernel_syms", "query_module", "vm86", "vm86old", "_sysctl",
    "io_uring_setup", "io_uring_enter", "io_uring_register",
})

#: covered up inside the container (runc's and Docker's maskedPaths): a file gets
#: /dev/null bound on it, a directory an empty read-only tmpfs; missing ones are skipped
DEFAULT_MASKED_PATHS = (
    "/proc/acpi", "/proc/asound", "/proc/interrupts", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
    "/sys/devices/virtual/powercap",
)
#: made read-only inside the container (runc's and Docker's readonlyPaths)
DEFAULT_READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")
