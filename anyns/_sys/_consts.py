"""Kernel constants used by anyns, with the C names (x86_64 / generic uapi values).

Sources: include/uapi/linux/sched.h, include/uapi/linux/mount.h,
include/uapi/linux/prctl.h, include/uapi/linux/close_range.h.
"""

# clone flags (include/uapi/linux/sched.h)
CLONE_NEWTIME = 0x00000080
CLONE_PIDFD = 0x00001000
CLONE_PARENT = 0x00008000
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_CLEAR_SIGHAND = 0x100000000  # clone3 only, Linux 5.5
CLONE_INTO_CGROUP = 0x200000000  # clone3 only, Linux 5.7

# mount(2) flags
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_NOATIME = 1024
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_UNBINDABLE = 1 << 17
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24

# umount2(2)
MNT_DETACH = 2

# new mount API (include/uapi/linux/mount.h, fcntl.h)
AT_FDCWD = -100
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000
OPEN_TREE_CLONE = 1
OPEN_TREE_CLOEXEC = 0o2000000
MOVE_MOUNT_F_EMPTY_PATH = 0x04
MOVE_MOUNT_T_EMPTY_PATH = 0x40
FSOPEN_CLOEXEC = 1
FSMOUNT_CLOEXEC = 1
FSCONFIG_SET_STRING = 1
FSCONFIG_CMD_CREATE = 6
MOUNT_ATTR_RDONLY = 0x00000001
MOUNT_ATTR_NOSUID = 0x00000002
MOUNT_ATTR_NODEV = 0x00000004
MOUNT_ATTR_NOEXEC = 0x00000008
MOUNT_ATTR_STRICTATIME = 0x00000020

# openat2(2) resolve flags (include/uapi/linux/openat2.h), Linux 5.6
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10

# prctl(2)
PR_SET_PDEATHSIG = 1
PR_SET_NAME = 15
PR_SET_DUMPABLE = 4

# close_range(2), Linux 5.11 for CLOEXEC
CLOSE_RANGE_CLOEXEC = 1 << 2

# tty_ioctl(4)
TIOCSCTTY = 0x540E
TIOCSWINSZ = 0x5414

# netdevice(7) ioctls for bringing lo up without netlink
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
IFF_LOOPBACK = 0x8

# x86_64 syscall numbers (arch/x86/entry/syscalls/syscall_64.tbl); the numbers
# from 424 on are shared by every architecture.
SYS_pivot_root = 155
SYS_waitid = 247
SYS_execveat = 322
SYS_pidfd_send_signal = 424
SYS_open_tree = 428
SYS_move_mount = 429
SYS_fsopen = 430
SYS_fsconfig = 431
SYS_fsmount = 432
SYS_clone3 = 435
SYS_close_range = 436
SYS_openat2 = 437
SYS_mount_setattr = 442
