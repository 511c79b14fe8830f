/*
 * libanyns-spawn: the native spawn core. The zygote loads it with ctypes and
 * calls anyns_spawn() once per container; everything between clone3 and
 * execve runs here, in C, with no interpreter.
 *
 * Mechanism only: the policy (which ops, in which order, with which
 * arguments) is decided in Python (anyns/_plan.py) and arrives as a linked op
 * list (anyns/_zygote/_ops.py encodes it, anyns_plan_link() turns its offsets
 * into pointers once per plan). One enum, one struct, one switch, as
 * bubblewrap's SetupOp.
 *
 * The child is cloned with CLONE_VM on a stack of its own: it runs in the
 * zygote's address space, so there is no page-table copy, no copy-on-write
 * fault and no address-space teardown per container. That shapes every line
 * of the child's code (glibc's posix_spawn and CPython's vfork path keep the
 * same rules):
 *   - it shares the zygote's memory, which goes on running Python: it writes
 *     nothing but its own stack, and reads only the plan, which the zygote
 *     keeps alive (and unchanged) until the child has exec'd or died;
 *   - it shares the zygote's thread pointer, so nothing that touches
 *     thread-local state may run: no errno (raw syscalls return -errno), no
 *     libc call at all (no malloc, no stdio, no locks; glibc's set*id
 *     wrappers would even signal the zygote's threads), no stack protector;
 *   - signal handlers live in the shared memory: every signal is blocked
 *     across the clone, CLONE_CLEAR_SIGHAND resets the handlers in the child,
 *     and the "signals" op unblocks them once the child is set up;
 *   - the zygote learns that the stack is free again from
 *     CLONE_CHILD_CLEARTID: the kernel clears the word and wakes a futex when
 *     the child's memory is released, at execve or at exit.
 * Where a process whose memory is shared cannot do what the plan needs
 * (see anyns_spawn's `shared_vm`), the same code runs in an ordinary
 * copy-on-write clone.
 *
 * On the first failure the child writes one record to the error pipe (the
 * fields NUL-separated: step, syscall, path, errno, message, as
 * anyns/_protocol.py decodes it) and exits 127. When execve succeeds the
 * pipe, close-on-exec, reads EOF: that is the supervisor's "it runs".
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/sched.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#define EXPORT __attribute__((visibility("default")))
#define ANYNS_NATIVE_VERSION 1

/* ------------------------------------------------------------------ syscalls */

#ifndef SYS_open_tree
#define SYS_open_tree 428
#endif
#ifndef SYS_move_mount
#define SYS_move_mount 429
#endif
#ifndef SYS_fsopen
#define SYS_fsopen 430
#endif
#ifndef SYS_fsconfig
#define SYS_fsconfig 431
#endif
#ifndef SYS_fsmount
#define SYS_fsmount 432
#endif
#ifndef SYS_clone3
#define SYS_clone3 435
#endif
#ifndef SYS_close_range
#define SYS_close_range 436
#endif
#ifndef SYS_openat2
#define SYS_openat2 437
#endif
#ifndef SYS_mount_setattr
#define SYS_mount_setattr 442
#endif

#if defined(__x86_64__)
static inline long raw6(long n, long a, long b, long c, long d, long e, long f)
{
	register long r10 __asm__("r10") = d;
	register long r8 __asm__("r8") = e;
	register long r9 __asm__("r9") = f;
	long ret;
	__asm__ volatile("syscall"
			 : "=a"(ret)
			 : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
			 : "rcx", "r11", "memory");
	return ret;
}
#elif defined(__aarch64__)
static inline long raw6(long n, long a, long b, long c, long d, long e, long f)
{
	register long x8 __asm__("x8") = n;
	register long x0 __asm__("x0") = a;
	register long x1 __asm__("x1") = b;
	register long x2 __asm__("x2") = c;
	register long x3 __asm__("x3") = d;
	register long x4 __asm__("x4") = e;
	register long x5 __asm__("x5") = f;
	__asm__ volatile("svc #0"
			 : "+r"(x0)
			 : "r"(x8), "r"(x1), "r"(x2), "r"(x3), "r"(x4), "r"(x5)
			 : "memory");
	return x0;
}
#else
#error "anyns's native spawn core supports x86_64 and aarch64"
#endif

#define SC(n, ...) SC_(n, __VA_ARGS__, 0, 0, 0, 0, 0, 0)
#define SC_(n, a, b, c, d, e, f, ...) raw6((n), (long)(a), (long)(b), (long)(c), (long)(d), (long)(e), (long)(f))
#define SC0(n) raw6((n), 0, 0, 0, 0, 0, 0)

/*
 * int anyns_clone3_raw(struct clone_args *args, size_t size, int (*fn)(void *), void *arg):
 * clone3; the child calls fn(arg) on the new stack and exits with its value.
 * In asm because a CLONE_VM child must not return through the parent's
 * frames (glibc's clone3.S does the same).
 */
int anyns_clone3_raw(struct clone_args *args, size_t size, int (*fn)(void *), void *arg);
#if defined(__x86_64__)
__asm__(".text\n"
	".globl anyns_clone3_raw\n"
	".hidden anyns_clone3_raw\n"
	".type anyns_clone3_raw,@function\n"
	"anyns_clone3_raw:\n"
	"	mov %rcx, %r8\n"
	"	mov $435, %eax\n"
	"	syscall\n"
	"	test %rax, %rax\n"
	"	jnz 1f\n"
	"	xor %ebp, %ebp\n"
	"	mov %r8, %rdi\n"
	"	call *%rdx\n"
	"	mov %eax, %edi\n"
	"	mov $231, %eax\n"
	"	syscall\n"
	"	hlt\n"
	"1:	ret\n"
	".size anyns_clone3_raw, .-anyns_clone3_raw\n");
#elif defined(__aarch64__)
__asm__(".text\n"
	".globl anyns_clone3_raw\n"
	".hidden anyns_clone3_raw\n"
	".type anyns_clone3_raw,%function\n"
	"anyns_clone3_raw:\n"
	"	mov x8, #435\n"
	"	svc #0\n"
	"	cbnz x0, 1f\n"
	"	mov x29, xzr\n"
	"	mov x30, xzr\n"
	"	mov x0, x3\n"
	"	blr x2\n"
	"	mov x8, #94\n"
	"	svc #0\n"
	"1:	ret\n"
	".size anyns_clone3_raw, .-anyns_clone3_raw\n");
#endif

/* ------------------------------------------------------------------ kernel ABI bits */

#define O_PATH_ 010000000
#define AT_EMPTY_PATH_ 0x1000
#define AT_RECURSIVE_ 0x8000
#define AT_SYMLINK_NOFOLLOW_ 0x100
#define OPEN_TREE_CLONE_ 1
#define OPEN_TREE_CLOEXEC_ O_CLOEXEC
#define MOVE_MOUNT_F_EMPTY_PATH_ 0x04
#define MOVE_MOUNT_T_EMPTY_PATH_ 0x40
#define FSOPEN_CLOEXEC_ 1
#define FSMOUNT_CLOEXEC_ 1
#define FSCONFIG_SET_STRING_ 1
#define FSCONFIG_CMD_CREATE_ 6
#define MOUNT_ATTR_RDONLY_ 0x1
#define MOUNT_ATTR_NOSUID_ 0x2
#define MOUNT_ATTR_NODEV_ 0x4
#define MOUNT_ATTR_NOEXEC_ 0x8
#define RESOLVE_NO_MAGICLINKS_ 0x02
#define RESOLVE_NO_SYMLINKS_ 0x04
#define RESOLVE_BENEATH_ 0x08
#define CLOSE_RANGE_CLOEXEC_ 4
#define MS_RDONLY_ 1
#define MS_NOSUID_ 2
#define MS_NODEV_ 4
#define MS_NOEXEC_ 8
#define MS_BIND_ 4096
#define PR_SET_PDEATHSIG_ 1
#define PR_SET_DUMPABLE_ 4
#define PR_SET_SECCOMP_ 22
#define PR_CAPBSET_DROP_ 24
#define PR_SET_NO_NEW_PRIVS_ 38
#define PR_CAP_AMBIENT_ 47
#define PR_CAP_AMBIENT_CLEAR_ALL_ 4
#define SECCOMP_MODE_FILTER_ 2
#define CAP_VERSION_3 0x20080522
#define TIOCSCTTY_ 0x540E
#define TIOCSWINSZ_ 0x5414
#define TIOCSPTLCK_ 0x40045431
#define TIOCGPTPEER_ 0x5441
#define SIOCSIFFLAGS_ 0x8914
#define IFF_UP_ 0x1
#define IFF_LOOPBACK_ 0x8
#define CLONE_NEWTIME_ 0x80
#define STATX_TYPE_ 1
#define S_IFMT_ 0170000
#define S_IFDIR_ 0040000
#define S_IFCHR_ 0020000
#define POLLIN_ 1
#define SOL_SOCKET_ 1
#define SCM_RIGHTS_ 1
#define MSG_NOSIGNAL_ 0x4000

struct open_how_ {
	uint64_t flags, mode, resolve;
};
struct mount_attr_ {
	uint64_t attr_set, attr_clr, propagation, userns_fd;
};
struct statx_ {
	uint32_t mask, blksize;
	uint64_t attributes;
	uint32_t nlink, uid, gid;
	uint16_t mode, pad0;
	uint64_t ino, size, blocks, attributes_mask;
	int64_t times[8];
	uint32_t rdev_major, rdev_minor, dev_major, dev_minor;
	uint64_t spare[14];
};
struct kernel_sigaction_ {
	unsigned long handler, flags, restorer, mask;
};
struct pollfd_ {
	int fd;
	short events, revents;
};
struct iovec_ {
	const void *base;
	size_t len;
};
struct msghdr_ {
	void *name;
	int namelen;
	struct iovec_ *iov;
	size_t iovlen;
	void *control;
	size_t controllen;
	int flags;
};
struct sock_fprog_ {
	unsigned short len;
	const void *filter;
};
struct cap_header_ {
	uint32_t version;
	int pid;
};
struct cap_data_ {
	uint32_t effective, permitted, inheritable;
};

/* ------------------------------------------------------------------ the op list */

/* Keep in step with anyns/_zygote/_ops.py (OPS): the value of each op is its index there. */
enum op_code {
	OP_UNSHARE,
	OP_ENTER_TIME_NAMESPACE,
	OP_SETNS,
	OP_SEND_NAMESPACES,
	OP_SEND_ROOT,
	OP_CHECK_ALIVE,
	OP_NOT_DUMPABLE,
	OP_WAIT_GO,
	OP_CGROUP_ENTER,
	OP_MASK_PATHS,
	OP_SETSID,
	OP_DROP_BOUNDING,
	OP_SECCOMP_BPF,
	OP_CAPSET,
	OP_NO_NEW_PRIVS,
	OP_HOLD_PATH,
	OP_BECOME_ROOT,
	OP_SET_USER,
	OP_BIND_DEVICE,
	OP_SETDOMAINNAME,
	OP_MOUNT,
	OP_ATTACH_SKELETON,
	OP_MKPATH,
	OP_MOUNTPOINT,
	OP_BIND_ROOT,
	OP_ROOT_ANCHOR,
	OP_BIND_AT,
	OP_MOUNT_AT,
	OP_FSMOUNT_AT,
	OP_BIND_ANCHOR,
	OP_MKDIR_AT,
	OP_SYMLINK_AT,
	OP_FILES_TMPFS,
	OP_WRITE_FILE_IN,
	OP_WRITE_FILE_AT,
	OP_WRITE_FILE_UNDER,
	OP_ATTACH_FILE,
	OP_ROOT_READONLY,
	OP_CHDIR_ROOT,
	OP_MAKEDIRS,
	OP_STAT,
	OP_OPEN_TREE,
	OP_ATTACH_TREE,
	OP_MOUNT_SETATTR,
	OP_MKDIR,
	OP_SYMLINK,
	OP_CHDIR,
	OP_PIVOT_ROOT,
	OP_UMOUNT2,
	OP_SETHOSTNAME,
	OP_INTERFACE_UP,
	OP_UMASK,
	OP_SETRLIMIT,
	OP_STDIO,
	OP_TTY,
	OP_CLOSE_FDS,
	OP_SIGNALS,
	OP_PDEATHSIG,
	OP_EXEC_INIT,
	OP_EXECVE,
	OP_COUNT
};

/*
 * One op: what the record names when it fails (step, call, path), and its
 * arguments by kind. In the encoded plan every pointer is an offset from
 * the plan's start (0: NULL); anyns_plan_link() makes them pointers.
 */
struct op {
	uint32_t code;
	uint32_t reserved;
	const char *step;
	const char *call;
	const char *path;
	int64_t n[6];
	const char *s[4];
	const char *const *v[3];
	const unsigned char *data;
	uint64_t ndata;
};

struct plan_header {
	char magic[8]; /* "ANYNSOPS" */
	uint32_t version;
	uint32_t nops;
	uint64_t size;
	uint64_t stack_words; /* string-vector slots the child may copy onto its stack */
	uint64_t linked;      /* base address once linked */
};

#define PLAN_MAGIC "ANYNSOPS"
#define PLAN_VERSION 1

/* The per-spawn fds (the rt array), by index; extra fds (Join sources, pipes, cgroups) follow. */
enum { RT_STDIN, RT_STDOUT, RT_STDERR, RT_ERRPIPE, RT_SUPERVISOR, RT_SKELETON, RT_INIT, RT_EXTRA };
#define MAX_RT 64
#define MAX_ANCHORS 16
#define MAX_TREES 128
#define EXIT_SETUP_FAILED 127

/* ------------------------------------------------------------------ small string helpers (no libc) */

static size_t slen(const char *s)
{
	size_t n = 0;
	while (s[n])
		n++;
	return n;
}

/* Copy s[0:n] into out (size cap), NUL-terminated; -ENAMETOOLONG if it does not fit. */
static int scopy(char *out, size_t cap, const char *s, size_t n)
{
	size_t i;
	if (n + 1 > cap)
		return -ENAMETOOLONG;
	for (i = 0; i < n; i++)
		out[i] = s[i];
	out[n] = 0;
	return 0;
}

static char *put_str(char *p, char *end, const char *s)
{
	while (*s && p < end)
		*p++ = *s++;
	return p;
}

static char *put_num(char *p, char *end, long v)
{
	char digits[24];
	int n = 0;
	unsigned long u = v < 0 ? (unsigned long)-v : (unsigned long)v;
	if (v < 0 && p < end)
		*p++ = '-';
	do {
		digits[n++] = (char)('0' + u % 10);
		u /= 10;
	} while (u);
	while (n && p < end)
		*p++ = digits[--n];
	return p;
}

/* "/proc/self/fd/N" for fd into buf */
static const char *fd_path(char buf[32], int fd)
{
	char *p = put_str(buf, buf + 31, "/proc/self/fd/");
	p = put_num(p, buf + 31, fd);
	*p = 0;
	return buf;
}

/* ------------------------------------------------------------------ the child's state (on its own stack) */

struct child {
	const struct op *op;  /* the op running */
	const char *call;     /* the syscall that failed, when more exact than the op's */
	const char *path;     /* the path the failure names, when not the op's */
	int rt[MAX_RT];
	int nrt;
	int anchor_fd[MAX_ANCHORS];
	const char *anchor_path[MAX_ANCHORS];
	size_t anchor_len[MAX_ANCHORS];
	int nanchors;
	int trees[MAX_TREES];
	int ntrees;
	int files_fd;
	const struct plan_header *plan;
	const char **scratch; /* stack_words slots for exec vectors */
};

/* A failing syscall: its name is what the record says (the op's default otherwise). */
#define NAMED(st, name, expr)                                                                      \
	({                                                                                         \
		long r_ = (expr);                                                                  \
		if (r_ < 0 && r_ > -4096)                                                          \
			(st)->call = (name);                                                       \
		r_;                                                                                \
	})
#define TRY(expr)                                                                                  \
	do {                                                                                       \
		long e_ = (expr);                                                                  \
		if (e_ < 0 && e_ > -4096)                                                          \
			return (int)e_;                                                            \
	} while (0)

static void close_fd(int fd)
{
	if (fd >= 0)
		SC(SYS_close, fd);
}

static int extra(struct child *st, int64_t index)
{
	if (index < 0 || RT_EXTRA + index >= st->nrt)
		return -EBADF;
	return st->rt[RT_EXTRA + index];
}

static long openat2_(struct child *st, int dirfd, const char *path, uint64_t flags, uint64_t resolve)
{
	struct open_how_ how = {flags, 0, resolve};
	return NAMED(st, "openat2", SC(SYS_openat2, dirfd, path, &how, sizeof how));
}

static long mount_setattr_(struct child *st, int dirfd, const char *path, unsigned flags, uint64_t set,
			   uint64_t propagation)
{
	struct mount_attr_ attr = {set, 0, propagation, 0};
	return NAMED(st, "mount_setattr", SC(SYS_mount_setattr, dirfd, path, flags, &attr, sizeof attr));
}

static long open_tree_(struct child *st, int dirfd, const char *path, unsigned flags)
{
	return NAMED(st, "open_tree", SC(SYS_open_tree, dirfd, path, flags));
}

static long move_mount_(struct child *st, int from, const char *from_path, int to, const char *to_path, unsigned flags)
{
	return NAMED(st, "move_mount", SC(SYS_move_mount, from, from_path, to, to_path, flags));
}

static long mount_(struct child *st, const char *source, const char *target, const char *fstype, unsigned long flags,
		   const char *data)
{
	return NAMED(st, "mount", SC(SYS_mount, source, target, fstype, flags, data));
}

static long prctl_(struct child *st, long option, long arg)
{
	return NAMED(st, "prctl", SC(SYS_prctl, option, arg, 0, 0, 0));
}

static int is_dir_fd(int fd, int *is_dir)
{
	struct statx_ sx;
	long r = SC(SYS_statx, fd, "", AT_EMPTY_PATH_, STATX_TYPE_, &sx);
	if (r < 0)
		return (int)r;
	*is_dir = (sx.mode & S_IFMT_) == S_IFDIR_;
	return 0;
}

/* ------------------------------------------------------------------ paths beneath the container's mounts */

#define BENEATH (RESOLVE_BENEATH_ | RESOLVE_NO_SYMLINKS_ | RESOLVE_NO_MAGICLINKS_)
#define RETRIES 16
enum { CREATE_NONE, CREATE_DIR, CREATE_FILE };

/*
 * Directories (and a file last, if as_file) along rel below root_fd, never
 * through a symlink and never out of the tree: a link in a root filesystem
 * must not redirect a mkdir onto the host (runc CVE-2021-30465). Existing
 * components are fine.
 */
static int make_path_beneath(int root_fd, const char *rel, int as_file)
{
	char part[256];
	const char *p = rel, *q;
	int current = (int)SC(SYS_fcntl, root_fd, F_DUPFD_CLOEXEC, 0);
	int any = 0;
	if (current < 0)
		return current;
	while (*p) {
		long fd;
		size_t n;
		while (*p == '/')
			p++;
		if (!*p)
			break;
		q = p;
		while (*q && *q != '/')
			q++;
		n = (size_t)(q - p);
		if (n == 1 && p[0] == '.') {
			p = q;
			continue;
		}
		if ((n == 2 && p[0] == '.' && p[1] == '.') || scopy(part, sizeof part, p, n) < 0) {
			close_fd(current);
			return n == 2 ? -EINVAL : -ENAMETOOLONG;
		}
		any = 1;
		{
			const char *rest = q;
			while (*rest == '/')
				rest++;
			if (!*rest && as_file) {
				fd = SC(SYS_openat, current, part, O_PATH_ | O_NOFOLLOW | O_CLOEXEC, 0);
				if (fd == -ENOENT)
					fd = SC(SYS_openat, current, part,
						O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
				close_fd(current);
				if (fd < 0)
					return (int)fd;
				close_fd((int)fd);
				return 0;
			}
		}
		fd = SC(SYS_openat, current, part, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, 0);
		if (fd == -ENOENT) {
			long r = SC(SYS_mkdirat, current, part, 0755);
			if (r < 0 && r != -EEXIST) {
				close_fd(current);
				return (int)r;
			}
			fd = SC(SYS_openat, current, part, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, 0);
		}
		close_fd(current);
		if (fd < 0)
			return (int)fd;
		current = (int)fd;
		p = q;
	}
	close_fd(current);
	return any ? 0 : -EINVAL;
}

/* rel opened below directory fd anchor without following a symlink or leaving it (made if missing, as create says). */
static long resolve(struct child *st, int anchor, const char *rel, int create, uint64_t flags)
{
	int i;
	for (i = 0; i < RETRIES; i++) {
		long fd = openat2_(st, anchor, rel, flags | O_CLOEXEC, BENEATH);
		if (fd >= 0)
			return fd;
		if (fd == -EAGAIN) /* a rename raced the lookup: look again */
			continue;
		if (fd != -ENOENT || !create)
			return fd;
		st->call = NULL;
		TRY(make_path_beneath(anchor, rel, create == CREATE_FILE));
		create = CREATE_NONE;
	}
	return -EAGAIN;
}

/* The anchor (a mount this child made) container path lies under, and the rest of the path. */
static int anchor_of(struct child *st, const char *path, const char **rest)
{
	int i, best = -1;
	size_t n = slen(path);
	for (i = 0; i < st->nanchors; i++) {
		size_t k = st->anchor_len[i];
		const char *key = st->anchor_path[i];
		size_t j;
		int match;
		while (k > 1 && key[k - 1] == '/')
			k--;
		match = n >= k;
		for (j = 0; match && j < k; j++)
			match = path[j] == key[j];
		if (match && !(n == k || k == 1 || path[k] == '/'))
			match = 0;
		if (match && (best < 0 || st->anchor_len[i] > st->anchor_len[best]))
			best = i;
	}
	if (best < 0)
		return -EINVAL;
	{
		size_t k = st->anchor_len[best];
		const char *r = path + (k <= n ? k : n);
		while (*r == '/')
			r++;
		*rest = *r ? r : ".";
	}
	return st->anchor_fd[best];
}

static long open_beneath(struct child *st, const char *path, int create)
{
	const char *rest;
	int anchor = anchor_of(st, path, &rest);
	if (anchor < 0)
		return anchor;
	return resolve(st, anchor, rest, create, O_PATH_ | O_NOFOLLOW);
}

/* The directory holding container path path (resolved beneath) and its last name (in name). */
static long parent_beneath(struct child *st, const char *path, char name[256])
{
	char parent[4096];
	size_t n = slen(path), cut;
	while (n > 1 && path[n - 1] == '/')
		n--;
	cut = n;
	while (cut > 0 && path[cut - 1] != '/')
		cut--;
	if (cut == n || (n - cut == 1 && path[cut] == '.') || (n - cut == 2 && path[cut] == '.' && path[cut + 1] == '.'))
		return -EINVAL;
	TRY(scopy(name, 256, path + cut, n - cut));
	if (cut <= 1)
		TRY(scopy(parent, sizeof parent, "/", 1));
	else
		TRY(scopy(parent, sizeof parent, path, cut - 1));
	return open_beneath(st, parent, CREATE_NONE);
}

/* Attach detached mount tree on container path path, made if missing as create says. */
static int move_onto(struct child *st, int tree, const char *path, int create)
{
	long target = open_beneath(st, path, create);
	int r = 0, is_dir = 1;
	if (target < 0)
		return (int)target;
	if (create == CREATE_DIR) {
		r = is_dir_fd((int)target, &is_dir);
		if (!r && !is_dir)
			r = -ENOTDIR; /* a file or a symlink where a directory mount point goes */
	}
	if (!r)
		r = (int)move_mount_(st, tree, "", (int)target, "", MOVE_MOUNT_F_EMPTY_PATH_ | MOVE_MOUNT_T_EMPTY_PATH_);
	close_fd((int)target);
	return r;
}

static int add_anchor(struct child *st, const char *path, int fd)
{
	if (st->nanchors == MAX_ANCHORS)
		return -E2BIG;
	st->anchor_fd[st->nanchors] = fd;
	st->anchor_path[st->nanchors] = path;
	st->anchor_len[st->nanchors] = slen(path);
	st->nanchors++;
	return 0;
}

/* Attach detached mount mnt on directory path and keep it as the anchor below path (it is closed on failure). */
static int anchor_at(struct child *st, const char *path, int mnt)
{
	int r = move_onto(st, mnt, path, CREATE_DIR);
	if (!r)
		r = add_anchor(st, path, mnt);
	if (r)
		close_fd(mnt);
	return r;
}

/* A detached mount of a new fstype (fsopen, "key=value" options, fsmount). */
static long new_filesystem(struct child *st, const char *fstype, const char *const *options, uint64_t attr)
{
	long fs = NAMED(st, "fsopen", SC(SYS_fsopen, fstype, FSOPEN_CLOEXEC_));
	long r = 0, mnt;
	if (fs < 0)
		return fs;
	for (; options && *options && !r; options++) {
		char key[256];
		const char *o = *options, *eq = o;
		while (*eq && *eq != '=')
			eq++;
		r = scopy(key, sizeof key, o, (size_t)(eq - o));
		if (!r)
			r = NAMED(st, "fsconfig", SC(SYS_fsconfig, fs, FSCONFIG_SET_STRING_, key, *eq ? eq + 1 : "", 0));
	}
	if (!r)
		r = NAMED(st, "fsconfig", SC(SYS_fsconfig, fs, FSCONFIG_CMD_CREATE_, 0, 0, 0));
	if (r < 0) {
		close_fd((int)fs);
		return r;
	}
	mnt = NAMED(st, "fsmount", SC(SYS_fsmount, fs, FSMOUNT_CLOEXEC_, attr));
	close_fd((int)fs);
	return mnt;
}

/* A detached copy (open_tree) of host path source; follow 0: no symlink on the way. Errors name source. */
static long open_source(struct child *st, const char *source, unsigned flags, int follow)
{
	long fd, tree;
	if (follow) {
		tree = open_tree_(st, AT_FDCWD, source, flags);
	} else {
		fd = openat2_(st, AT_FDCWD, source, O_PATH_ | O_CLOEXEC, RESOLVE_NO_SYMLINKS_);
		if (fd < 0) {
			st->path = source;
			return fd;
		}
		tree = open_tree_(st, (int)fd, "", flags | AT_EMPTY_PATH_);
		close_fd((int)fd);
	}
	if (tree < 0)
		st->path = source;
	return tree;
}

/* Attach detached mount tree on container path path: attributes while detached, propagation once attached. Closes tree. */
static int attach(struct child *st, int tree, const char *path, uint64_t attr_set, uint64_t propagation, int recursive)
{
	unsigned at_rec = recursive ? AT_RECURSIVE_ : 0;
	int r = 0, is_dir = 0;
	if (attr_set)
		r = (int)mount_setattr_(st, tree, "", AT_EMPTY_PATH_ | at_rec, attr_set, 0);
	if (!r)
		r = is_dir_fd(tree, &is_dir);
	if (!r)
		r = move_onto(st, tree, path, is_dir ? CREATE_DIR : CREATE_FILE);
	if (!r && propagation)
		r = (int)mount_setattr_(st, tree, "", AT_EMPTY_PATH_ | at_rec, 0, propagation);
	close_fd(tree);
	return r;
}

/* A new file rel below directory fd anchor holding data; missing parents made; an existing one replaced, never written through. */
static int write_beneath(struct child *st, int anchor, const char *rel, const unsigned char *data, uint64_t ndata,
			 int mode)
{
	char head[4096], name[256];
	size_t n = slen(rel), cut = n;
	long parent, fd;
	int flags = O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC;
	while (*rel == '/')
		rel++, n--, cut--;
	while (cut > 0 && rel[cut - 1] != '/')
		cut--;
	TRY(scopy(name, sizeof name, rel + cut, n - cut));
	if (cut)
		TRY(scopy(head, sizeof head, rel, cut - 1));
	else
		TRY(scopy(head, sizeof head, ".", 1));
	parent = resolve(st, anchor, head, CREATE_DIR, O_PATH_ | O_DIRECTORY);
	if (parent < 0)
		return (int)parent;
	st->call = NULL;
	fd = SC(SYS_openat, parent, name, flags, mode);
	if (fd == -EEXIST) {
		SC(SYS_unlinkat, parent, name, 0);
		fd = SC(SYS_openat, parent, name, flags, mode);
	}
	close_fd((int)parent);
	if (fd < 0)
		return (int)fd;
	while (ndata) {
		long w = SC(SYS_write, fd, data, ndata);
		if (w == -EINTR)
			continue;
		if (w < 0) {
			close_fd((int)fd);
			return (int)w;
		}
		data += w;
		ndata -= (uint64_t)w;
	}
	close_fd((int)fd);
	return 0;
}

/* ------------------------------------------------------------------ ops with more than a line */

static int send_fds(struct child *st, const char *tag, const int *fds, int n)
{
	union {
		char buf[256];
		uint64_t align;
	} control;
	struct iovec_ iov = {tag, slen(tag)};
	struct msghdr_ msg = {0};
	size_t payload = (size_t)n * sizeof(int);
	/* struct cmsghdr: len (size_t), level (int), type (int), then the fds */
	size_t header = sizeof(size_t) + 2 * sizeof(int);
	size_t i;
	char *p;
	long r;
	if (n > 32)
		return -E2BIG;
	for (i = 0; i < sizeof control.buf; i++)
		control.buf[i] = 0;
	*(size_t *)control.buf = header + payload;
	*(int *)(control.buf + sizeof(size_t)) = SOL_SOCKET_;
	*(int *)(control.buf + sizeof(size_t) + sizeof(int)) = SCM_RIGHTS_;
	p = control.buf + header;
	for (i = 0; i < payload; i++)
		p[i] = ((const char *)fds)[i];
	msg.iov = &iov;
	msg.iovlen = 1;
	msg.control = control.buf;
	msg.controllen = (header + payload + 7) & ~(size_t)7;
	r = SC(SYS_sendmsg, st->rt[RT_ERRPIPE], &msg, MSG_NOSIGNAL_);
	return r < 0 ? (int)r : 0;
}

static int op_send_namespaces(struct child *st, const char *const *kinds)
{
	int fds[32], n = 0, r = 0, i;
	for (; kinds && *kinds && !r; kinds++) {
		char path[64];
		char *p = put_str(path, path + 63, "/proc/self/ns/");
		p = put_str(p, path + 63, *kinds);
		*p = 0;
		if (n == 32) {
			r = -E2BIG;
			break;
		}
		fds[n] = (int)SC(SYS_openat, AT_FDCWD, path, O_RDONLY | O_CLOEXEC, 0);
		if (fds[n] < 0)
			r = fds[n];
		else
			n++;
	}
	if (!r)
		r = send_fds(st, "NS", fds, n);
	for (i = 0; i < n; i++)
		close_fd(fds[i]);
	return r;
}

static int op_send_root(struct child *st)
{
	int root = (int)SC(SYS_openat, AT_FDCWD, "/", O_PATH_ | O_DIRECTORY | O_CLOEXEC, 0);
	int r;
	if (root < 0)
		return root;
	r = send_fds(st, "ROOT", &root, 1);
	close_fd(root);
	return r;
}

/* Cover masked (/dev/null on a file, an empty read-only tmpfs on a directory); make readonly so. */
static int op_mask_paths(struct child *st, const char *const *masked, const char *const *readonly)
{
	char devnull_path[32], at[32];
	struct statx_ sx;
	int devnull = (int)SC(SYS_openat, AT_FDCWD, "/dev/null", O_PATH_ | O_CLOEXEC, 0);
	int r = 0;
	if (devnull < 0) {
		st->path = "/dev/null";
		return devnull;
	}
	/* the host's own null device, checked through the fd that is bound (runc CVE-2025-31133) */
	r = (int)SC(SYS_statx, devnull, "", AT_EMPTY_PATH_, STATX_TYPE_, &sx);
	if (!r && ((sx.mode & S_IFMT_) != S_IFCHR_ || sx.rdev_major != 1 || sx.rdev_minor != 3))
		r = -EINVAL;
	if (r) {
		st->path = "/dev/null";
		close_fd(devnull);
		return r;
	}
	fd_path(devnull_path, devnull);
	for (; masked && *masked && !r; masked++) {
		long target = open_beneath(st, *masked, CREATE_NONE);
		int is_dir = 0;
		if (target == -ENOENT) {
			st->call = NULL;
			continue;
		}
		st->path = *masked;
		if (target < 0) {
			r = (int)target;
			break;
		}
		fd_path(at, (int)target);
		r = is_dir_fd((int)target, &is_dir);
		if (!r && is_dir)
			r = (int)mount_(st, "tmpfs", at, "tmpfs", MS_RDONLY_ | MS_NOSUID_ | MS_NODEV_ | MS_NOEXEC_,
					"size=4k,mode=0555");
		else if (!r)
			r = (int)mount_(st, devnull_path, at, 0, MS_BIND_, 0);
		close_fd((int)target);
	}
	for (; !r && readonly && *readonly; readonly++) {
		long target = open_beneath(st, *readonly, CREATE_NONE), tree;
		if (target == -ENOENT) {
			st->call = NULL;
			continue;
		}
		st->path = *readonly;
		if (target < 0) {
			r = (int)target;
			break;
		}
		tree = open_tree_(st, (int)target, "", OPEN_TREE_CLONE_ | OPEN_TREE_CLOEXEC_ | AT_RECURSIVE_ | AT_EMPTY_PATH_);
		if (tree < 0) {
			r = (int)tree;
		} else {
			r = (int)mount_setattr_(st, (int)tree, "", AT_EMPTY_PATH_ | AT_RECURSIVE_,
						MOUNT_ATTR_RDONLY_ | MOUNT_ATTR_NOSUID_ | MOUNT_ATTR_NODEV_ | MOUNT_ATTR_NOEXEC_, 0);
			if (!r)
				r = (int)move_mount_(st, (int)tree, "", (int)target, "",
						     MOVE_MOUNT_F_EMPTY_PATH_ | MOVE_MOUNT_T_EMPTY_PATH_);
			close_fd((int)tree);
		}
		close_fd((int)target);
	}
	if (!r)
		st->path = NULL;
	close_fd(devnull);
	return r;
}

/* Open host path at fd number fd (O_PATH) while still host root. */
static int op_hold_path(struct child *st, const char *path, int fd, int follow)
{
	long opened = follow ? SC(SYS_openat, AT_FDCWD, path, O_PATH_ | O_CLOEXEC, 0)
			     : openat2_(st, AT_FDCWD, path, O_PATH_ | O_CLOEXEC, RESOLVE_NO_SYMLINKS_);
	if (opened < 0)
		return (int)opened;
	if (opened != fd) {
		int busy = opened > fd || SC(SYS_fcntl, fd, F_GETFD, 0) >= 0;
		long r = busy ? -EBUSY : SC(SYS_dup3, opened, fd, O_CLOEXEC);
		close_fd((int)opened);
		if (r < 0)
			return (int)r;
	}
	return 0;
}

static int op_set_groups(struct child *st, const uint32_t *groups, uint64_t n, int optional)
{
	long r = SC(SYS_setgroups, n, groups);
	(void)st;
	if (r == -EPERM && (optional || n == 0))
		return 0; /* setgroups denied (rootless): only "no groups" can be honoured, by leaving them */
	return r < 0 ? (int)r : 0;
}

static int op_bind_device(struct child *st, const char *path, const char *source)
{
	char name[256], at[32];
	long parent = parent_beneath(st, path, name), fd;
	int r;
	if (parent < 0)
		return (int)parent;
	st->call = NULL;
	fd = SC(SYS_openat, parent, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0666);
	close_fd((int)parent);
	if (fd < 0)
		return (int)fd;
	r = (int)mount_(st, source, fd_path(at, (int)fd), 0, MS_BIND_, 0);
	close_fd((int)fd);
	return r;
}

static int op_makedirs(const char *path)
{
	char buf[4096];
	size_t n = slen(path), i;
	long old, r = 0;
	TRY(scopy(buf, sizeof buf, path, n));
	/* the child runs with the zygote's umask 0: mkdir -p with 022, as a user would */
	old = SC(SYS_umask, 022);
	for (i = 1; i <= n && r >= 0; i++) {
		if (i == n || buf[i] == '/') {
			char c = buf[i];
			buf[i] = 0;
			r = SC(SYS_mkdirat, AT_FDCWD, buf, 0755);
			if (r == -EEXIST)
				r = 0;
			buf[i] = c;
		}
	}
	SC(SYS_umask, old);
	return (int)r;
}

static int op_tty(struct child *st, int rows, int cols)
{
	unsigned short size[4] = {(unsigned short)rows, (unsigned short)cols, 0, 0};
	int unlock = 0, r;
	long master, slave;
	/* /dev/ptmx is the container's own pts/ptmx by now */
	master = SC(SYS_openat, AT_FDCWD, "/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC, 0);
	if (master < 0)
		return (int)master;
	r = (int)SC(SYS_ioctl, master, TIOCSPTLCK_, &unlock);
	slave = r ? r : SC(SYS_ioctl, master, TIOCGPTPEER_, O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (slave < 0) {
		close_fd((int)master);
		return (int)slave;
	}
	r = (int)NAMED(st, "ioctl(TIOCSWINSZ)", SC(SYS_ioctl, slave, TIOCSWINSZ_, size));
	if (!r)
		r = (int)SC0(SYS_setsid);
	if (r > 0)
		r = 0;
	if (!r)
		r = (int)NAMED(st, "ioctl(TIOCSCTTY)", SC(SYS_ioctl, slave, TIOCSCTTY_, 0));
	if (!r)
		r = (int)SC(SYS_dup3, slave, 0, 0);
	if (r >= 0)
		r = (int)SC(SYS_dup3, slave, 1, 0);
	if (r >= 0)
		r = (int)SC(SYS_dup3, slave, 2, 0);
	close_fd((int)slave);
	if (r >= 0)
		r = send_fds(st, "TTY", (const int *)&master, 1);
	close_fd((int)master);
	return r < 0 ? r : 0;
}

static int dup_onto(int from, int to)
{
	/* dup3 refuses from == to; then only the close-on-exec flag must go */
	long r = from == to ? SC(SYS_fcntl, to, F_SETFD, 0) : SC(SYS_dup3, from, to, 0);
	return r < 0 ? (int)r : 0;
}

/* The signals the zygote ignores (anyns_native_init): the only ones CLONE_CLEAR_SIGHAND leaves as they are. */
static uint64_t ignored_signals;

static int op_signals(struct child *st)
{
	struct kernel_sigaction_ dfl = {0, 0, 0, 0};
	uint64_t none = 0;
	int sig;
	(void)st;
	/* Every disposition back to the default. CLONE_CLEAR_SIGHAND reset the handled ones, but
	 * ignored ones survive exec: CPython ignores SIGPIPE and SIGXFSZ, nohup ignores SIGHUP, a
	 * shell's background job SIGINT and SIGQUIT. A container starts as if from a fresh login;
	 * only the zygote's ignored signals need a call each. */
	for (sig = 1; sig <= 64; sig++) {
		long r;
		if (!(ignored_signals >> (sig - 1) & 1))
			continue;
		r = SC(SYS_rt_sigaction, sig, &dfl, 0, 8);
		if (r < 0 && r != -EINVAL)
			return (int)r;
	}
	TRY(SC(SYS_rt_sigprocmask, SIG_SETMASK, &none, 0, 8));
	return 0;
}

static int poll_readable(int fd)
{
	struct pollfd_ p = {fd, POLLIN_, 0};
	long zero[2] = {0, 0};
	return SC(SYS_ppoll, &p, 1, zero, 0, 8) > 0;
}

/* execve each candidate like execvp(3): ENOENT, ENOTDIR, EACCES move on (EACCES is kept), others stop. */
static int exec_candidates(struct child *st, const char *const *candidates, const char *const *argv,
			   const char *const *envp)
{
	int first = 0;
	size_t n = 0;
	(void)st;
	while (candidates && candidates[n])
		n++;
	for (; candidates && *candidates; candidates++) {
		long r = SC(SYS_execve, *candidates, argv, envp);
		if ((r != -ENOENT && r != -ENOTDIR && r != -EACCES) || n == 1)
			return (int)r;
		if (!first || (r == -EACCES && first != -EACCES))
			first = (int)r;
	}
	return first ? first : -ENOENT;
}

/*
 * Exec the init program (anyns/_native/init.c) in mode, which starts the
 * program: its environment block is the control record (the two fds it
 * keeps, whose numbers differ per spawn, so it is built here on our stack),
 * then the plan's vector of candidates, argv and environment.
 */
static int op_exec_init(struct child *st, const struct op *op)
{
	static const char argv0[] = "anyns-init";
	const char *argv[2] = {argv0, 0};
	const char *const *vec = op->v[0];
	char control[96];
	char *p = control, *end = control + sizeof control - 1;
	int status = extra(st, op->n[0]), channel = st->rt[RT_ERRPIPE];
	size_t n = 0, i;
	if (status < 0)
		return status;
	while (vec && vec[n])
		n++;
	if (n + 2 > st->plan->stack_words)
		return -E2BIG;
	p = put_str(p, end, "ANYNS_INIT=");
	p = put_num(p, end, op->n[1]);
	p = put_str(p, end, " ");
	p = put_num(p, end, status);
	p = put_str(p, end, " ");
	p = put_num(p, end, channel);
	p = put_str(p, end, " ");
	p = put_num(p, end, op->n[2]);
	p = put_str(p, end, " ");
	p = put_num(p, end, op->n[3]);
	*p = 0;
	st->scratch[0] = control;
	for (i = 0; i < n; i++)
		st->scratch[i + 1] = vec[i];
	st->scratch[n + 1] = 0;
	/* the two fds the init keeps: the only ones execve does not close */
	TRY(SC(SYS_fcntl, status, F_SETFD, 0));
	TRY(SC(SYS_fcntl, channel, F_SETFD, 0));
	return (int)NAMED(st, "execveat",
			  SC(SYS_execveat, st->rt[RT_INIT], "", argv, st->scratch, AT_EMPTY_PATH_));
}

/* ------------------------------------------------------------------ the switch */

static int run_op(struct child *st, const struct op *op)
{
	const int64_t *n = op->n;
	const char *const *s = op->s;
	char at[32];
	long fd;
	int r;

	switch ((enum op_code)op->code) {
	case OP_UNSHARE:
		return (int)NAMED(st, "unshare", SC(SYS_unshare, n[0]));
	case OP_ENTER_TIME_NAMESPACE:
		/* unshare's time namespace applies to children only; the init never execs into it otherwise */
		fd = SC(SYS_openat, AT_FDCWD, "/proc/self/ns/time_for_children", O_RDONLY | O_CLOEXEC, 0);
		if (fd < 0)
			return (int)fd;
		r = (int)NAMED(st, "setns", SC(SYS_setns, fd, CLONE_NEWTIME_));
		close_fd((int)fd);
		return r;
	case OP_SETNS:
		r = extra(st, n[0]);
		return r < 0 ? r : (int)NAMED(st, "setns", SC(SYS_setns, r, n[1]));
	case OP_SEND_NAMESPACES:
		return op_send_namespaces(st, op->v[0]);
	case OP_SEND_ROOT:
		return op_send_root(st);
	case OP_CHECK_ALIVE:
		/* the container whose namespaces we join has exited: they are a shell */
		r = extra(st, n[0]);
		return r < 0 ? r : poll_readable(r) ? -ESRCH : 0;
	case OP_NOT_DUMPABLE:
		return (int)prctl_(st, PR_SET_DUMPABLE_, 0);
	case OP_WAIT_GO: {
		char go = 0;
		long got;
		r = extra(st, n[0]);
		if (r < 0)
			return r;
		do
			got = SC(SYS_read, r, &go, 1);
		while (got == -EINTR);
		if (got < 0)
			return (int)got;
		return got == 1 && go == '1' ? 0 : -ECANCELED; /* the supervisor abandoned the setup */
	}
	case OP_CGROUP_ENTER:
		/* "0" is the writer itself: no pid translation inside the new pid namespace */
		r = extra(st, n[0]);
		if (r < 0)
			return r;
		fd = SC(SYS_write, r, "0", 1);
		return fd < 0 ? (int)fd : 0;
	case OP_MASK_PATHS:
		return op_mask_paths(st, op->v[0], op->v[1]);
	case OP_SETSID:
		fd = SC0(SYS_setsid);
		return fd < 0 ? (int)fd : 0;
	case OP_DROP_BOUNDING: {
		int cap;
		for (cap = 0; cap < 64; cap++) {
			if (!((uint64_t)n[0] >> cap & 1))
				continue;
			fd = prctl_(st, PR_CAPBSET_DROP_, cap);
			if (fd < 0 && fd != -EINVAL) /* newer than this kernel: nothing to drop */
				return (int)fd;
		}
		st->call = NULL;
		return 0;
	}
	case OP_SECCOMP_BPF: {
		/* no_new_privs, or CAP_SYS_ADMIN, holds already (the plan's order) */
		struct sock_fprog_ prog = {(unsigned short)(op->ndata / 8), op->data};
		return (int)NAMED(st, "prctl", SC(SYS_prctl, PR_SET_SECCOMP_, SECCOMP_MODE_FILTER_, &prog, 0, 0));
	}
	case OP_CAPSET: {
		struct cap_header_ h = {CAP_VERSION_3, 0};
		uint64_t kept = (uint64_t)n[0];
		struct cap_data_ d[2] = {{(uint32_t)kept, (uint32_t)kept, 0}, {(uint32_t)(kept >> 32), (uint32_t)(kept >> 32), 0}};
		TRY(NAMED(st, "capset", SC(SYS_capset, &h, d)));
		return (int)prctl_(st, PR_CAP_AMBIENT_, PR_CAP_AMBIENT_CLEAR_ALL_);
	}
	case OP_NO_NEW_PRIVS:
		return (int)prctl_(st, PR_SET_NO_NEW_PRIVS_, 1);
	case OP_HOLD_PATH:
		return op_hold_path(st, s[0], (int)n[0], (int)n[1]);
	case OP_BECOME_ROOT:
		TRY(op_set_groups(st, 0, 0, 1));
		TRY(SC(SYS_setresgid, 0, 0, 0));
		return (int)SC(SYS_setresuid, 0, 0, 0);
	case OP_SET_USER:
		/* groups first: it needs CAP_SETGID */
		TRY(op_set_groups(st, (const uint32_t *)op->data, op->ndata / 4, 0));
		TRY(SC(SYS_setresgid, n[1], n[1], n[1]));
		return (int)SC(SYS_setresuid, n[0], n[0], n[0]);
	case OP_BIND_DEVICE:
		return op_bind_device(st, s[0], s[1]);
	case OP_SETDOMAINNAME:
		return (int)NAMED(st, "setdomainname", SC(SYS_setdomainname, s[0], slen(s[0])));
	case OP_SETHOSTNAME:
		return (int)NAMED(st, "sethostname", SC(SYS_sethostname, s[0], slen(s[0])));
	case OP_MOUNT:
		return (int)mount_(st, s[0], s[1], s[2], (unsigned long)n[0], s[3]);
	case OP_ATTACH_SKELETON:
		/* a private copy of the zygote's prebuilt root tree; it is the root anchor */
		fd = open_tree_(st, st->rt[RT_SKELETON], "", OPEN_TREE_CLONE_ | OPEN_TREE_CLOEXEC_ | AT_RECURSIVE_ | AT_EMPTY_PATH_);
		if (fd < 0)
			return (int)fd;
		r = (int)move_mount_(st, (int)fd, "", AT_FDCWD, s[0], MOVE_MOUNT_F_EMPTY_PATH_);
		if (!r)
			r = add_anchor(st, "/", (int)fd);
		if (r)
			close_fd((int)fd);
		return r;
	case OP_MKPATH:
	case OP_MOUNTPOINT: {
		int as_file = (int)n[0];
		const char *root = s[1], *rel = s[2];
		if (op->code == OP_MOUNTPOINT) {
			/* best effort: a failure resurfaces, with its step, when the mount is made */
			struct statx_ sx;
			as_file = s[0] && !(SC(SYS_statx, AT_FDCWD, s[0], 0, STATX_TYPE_, &sx) == 0 &&
					    (sx.mode & S_IFMT_) == S_IFDIR_);
		} else {
			root = s[0];
			rel = s[1];
		}
		fd = SC(SYS_openat, AT_FDCWD, root, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
		r = fd < 0 ? (int)fd : make_path_beneath((int)fd, rel, as_file);
		close_fd((int)fd);
		return op->code == OP_MOUNTPOINT ? 0 : r;
	}
	case OP_BIND_ROOT:
		/* a detached recursive copy, made nodev (and read-only) before it is attached */
		fd = open_source(st, s[0], OPEN_TREE_CLONE_ | OPEN_TREE_CLOEXEC_ | AT_RECURSIVE_, 1);
		if (fd < 0)
			return (int)fd;
		r = (int)mount_setattr_(st, (int)fd, "", AT_EMPTY_PATH_ | AT_RECURSIVE_, (uint64_t)n[0], 0);
		if (!r)
			r = (int)move_mount_(st, (int)fd, "", AT_FDCWD, s[1], MOVE_MOUNT_F_EMPTY_PATH_);
		if (!r)
			r = add_anchor(st, "/", (int)fd);
		if (r)
			close_fd((int)fd);
		return r;
	case OP_ROOT_ANCHOR:
		fd = SC(SYS_openat, AT_FDCWD, s[0], O_PATH_ | O_DIRECTORY | O_CLOEXEC, 0);
		if (fd < 0)
			return (int)fd;
		r = add_anchor(st, "/", (int)fd);
		if (r)
			close_fd((int)fd);
		return r;
	case OP_BIND_AT:
		fd = open_source(st, s[1], OPEN_TREE_CLONE_ | OPEN_TREE_CLOEXEC_ | (n[0] ? AT_RECURSIVE_ : 0), (int)n[3]);
		if (fd < 0)
			return (int)fd;
		return attach(st, (int)fd, s[0], (uint64_t)n[1], (uint64_t)n[2], (int)n[0]);
	case OP_MOUNT_AT:
		fd = open_beneath(st, s[0], CREATE_DIR);
		if (fd < 0)
			return (int)fd;
		r = (int)mount_(st, s[1], fd_path(at, (int)fd), s[2], (unsigned long)n[0], s[3]);
		close_fd((int)fd);
		return r;
	case OP_FSMOUNT_AT:
		/* made detached: the fd names this mount whatever happens to the path later */
		fd = new_filesystem(st, s[1], op->v[0], (uint64_t)n[0]);
		return fd < 0 ? (int)fd : anchor_at(st, s[0], (int)fd);
	case OP_BIND_ANCHOR:
		fd = open_source(st, s[1], OPEN_TREE_CLONE_ | OPEN_TREE_CLOEXEC_ | AT_RECURSIVE_, 1);
		return fd < 0 ? (int)fd : anchor_at(st, s[0], (int)fd);
	case OP_MKDIR_AT:
	case OP_SYMLINK_AT: {
		char name[256];
		fd = parent_beneath(st, s[0], name);
		if (fd < 0)
			return (int)fd;
		st->call = NULL;
		r = op->code == OP_MKDIR_AT ? (int)SC(SYS_mkdirat, fd, name, 0755) : (int)SC(SYS_symlinkat, s[1], fd, name);
		close_fd((int)fd);
		return r;
	}
	case OP_FILES_TMPFS:
		/* never attached itself: files are written into it, then each is bound from it */
		fd = new_filesystem(st, "tmpfs", op->v[0], MOUNT_ATTR_NOSUID_ | MOUNT_ATTR_NODEV_);
		if (fd < 0)
			return (int)fd;
		close_fd(st->files_fd);
		st->files_fd = (int)fd;
		return 0;
	case OP_WRITE_FILE_IN:
		if (st->files_fd < 0)
			return -EBADF;
		return write_beneath(st, st->files_fd, s[0], op->data, op->ndata, (int)n[0]);
	case OP_WRITE_FILE_AT: {
		const char *rest;
		int anchor = anchor_of(st, s[0], &rest);
		return anchor < 0 ? anchor : write_beneath(st, anchor, rest, op->data, op->ndata, (int)n[0]);
	}
	case OP_WRITE_FILE_UNDER:
		fd = SC(SYS_openat, AT_FDCWD, s[0], O_PATH_ | O_DIRECTORY | O_CLOEXEC, 0);
		if (fd < 0)
			return (int)fd;
		r = write_beneath(st, (int)fd, s[1], op->data, op->ndata, (int)n[0]);
		close_fd((int)fd);
		return r;
	case OP_ATTACH_FILE: {
		/* the files tmpfs holds only what write_file_in made: no link on the way */
		const char *rel = s[0];
		while (*rel == '/')
			rel++;
		if (st->files_fd < 0)
			return -EBADF;
		fd = open_tree_(st, st->files_fd, rel, OPEN_TREE_CLONE_ | OPEN_TREE_CLOEXEC_);
		if (fd < 0)
			return (int)fd;
		r = move_onto(st, (int)fd, s[0], CREATE_FILE);
		close_fd((int)fd);
		return r;
	}
	case OP_ROOT_READONLY:
	case OP_CHDIR_ROOT: {
		const char *rest;
		int root = anchor_of(st, "/", &rest);
		if (root < 0)
			return root;
		if (op->code == OP_CHDIR_ROOT)
			return (int)SC(SYS_fchdir, root);
		return (int)mount_setattr_(st, root, "", AT_EMPTY_PATH_, (uint64_t)n[0], 0);
	}
	case OP_MAKEDIRS:
		return op_makedirs(s[0]);
	case OP_STAT: {
		struct statx_ sx;
		return (int)SC(SYS_statx, AT_FDCWD, s[0], 0, STATX_TYPE_, &sx);
	}
	case OP_OPEN_TREE:
		/* a copy of a shared or slave bind's source, made while the tree is still in the host's peer groups */
		if (st->ntrees == MAX_TREES)
			return -E2BIG;
		fd = open_tree_(st, AT_FDCWD, s[0], OPEN_TREE_CLONE_ | OPEN_TREE_CLOEXEC_ | (n[0] ? AT_RECURSIVE_ : 0));
		if (fd < 0)
			return (int)fd;
		st->trees[st->ntrees++] = (int)fd;
		return 0;
	case OP_ATTACH_TREE:
		if (n[0] < 0 || n[0] >= st->ntrees)
			return -EBADF;
		r = st->trees[n[0]];
		st->trees[n[0]] = -1;
		return attach(st, r, s[0], (uint64_t)n[2], (uint64_t)n[3], (int)n[1]);
	case OP_MOUNT_SETATTR:
		return (int)mount_setattr_(st, AT_FDCWD, s[0], AT_RECURSIVE_, (uint64_t)n[0], 0);
	case OP_MKDIR:
		return (int)SC(SYS_mkdirat, AT_FDCWD, s[0], 0755);
	case OP_SYMLINK:
		return (int)SC(SYS_symlinkat, s[0], AT_FDCWD, s[1]);
	case OP_CHDIR:
		return (int)SC(SYS_chdir, s[0]);
	case OP_PIVOT_ROOT:
		return (int)NAMED(st, "pivot_root", SC(SYS_pivot_root, s[0], s[1]));
	case OP_UMOUNT2:
		return (int)NAMED(st, "umount2", SC(SYS_umount2, s[0], n[0]));
	case OP_INTERFACE_UP: {
		/* SIOCSIFFLAGS: no netlink in the child */
		char ifr[40] = {0};
		size_t len = slen(s[0]);
		short flags = IFF_UP_ | IFF_LOOPBACK_;
		if (len > 15)
			len = 15;
		scopy(ifr, 16, s[0], len);
		ifr[16] = (char)(flags & 0xff);
		ifr[17] = (char)(flags >> 8);
		fd = NAMED(st, "socket", SC(SYS_socket, 2 /* AF_INET */, 2 /* SOCK_DGRAM */ | O_CLOEXEC /* SOCK_CLOEXEC */, 0));
		if (fd < 0)
			return (int)fd;
		r = (int)NAMED(st, "ioctl(SIOCSIFFLAGS)", SC(SYS_ioctl, fd, SIOCSIFFLAGS_, ifr));
		close_fd((int)fd);
		return r;
	}
	case OP_UMASK:
		SC(SYS_umask, n[0]);
		return 0;
	case OP_SETRLIMIT: {
		uint64_t lim[2] = {(uint64_t)n[1], (uint64_t)n[2]};
		return (int)NAMED(st, "setrlimit", SC(SYS_prlimit64, 0, n[0], lim, 0));
	}
	case OP_STDIO:
		/* dup3 clears close-on-exec on the target, so 0-2 survive execve */
		TRY(dup_onto(st->rt[RT_STDIN], 0));
		TRY(dup_onto(st->rt[RT_STDOUT], 1));
		return dup_onto(st->rt[RT_STDERR], 2);
	case OP_TTY:
		return op_tty(st, (int)n[0], (int)n[1]);
	case OP_CLOSE_FDS:
		/* nothing but 0-2 may reach the program; CLOEXEC rather than close keeps the error
		 * pipe and the supervisor's pidfd usable until execve */
		return (int)NAMED(st, "close_range", SC(SYS_close_range, 3, ~0U, CLOSE_RANGE_CLOEXEC_));
	case OP_SIGNALS:
		return op_signals(st);
	case OP_PDEATHSIG:
		/* last: changing credentials clears it. Tied to the supervisor's thread (CLONE_PARENT
		 * made it our parent); if it died before this line no signal comes: its pidfd says so */
		TRY(prctl_(st, PR_SET_PDEATHSIG_, SIGKILL));
		if (poll_readable(st->rt[RT_SUPERVISOR]))
			SC(SYS_exit_group, EXIT_SETUP_FAILED);
		return 0;
	case OP_EXEC_INIT:
		return op_exec_init(st, op);
	case OP_EXECVE:
		return exec_candidates(st, op->v[0], op->v[1], op->v[2]);
	case OP_COUNT:
		break;
	}
	return -EINVAL;
}

/* ------------------------------------------------------------------ the child */

/* strerror texts, filled in the zygote at load (strerror is not for the child: it touches locale state) */
static const char *error_text[256];

static void report(struct child *st, int err)
{
	char record[4096]; /* MAX_FAILURE */
	char *p = record, *end = record + sizeof record;
	/* step, call and path stop short of the end: the errno and its text always fit after them */
	char *names_end = end - 128;
	const struct op *op = st->op;
	const char *call = st->call ? st->call : op ? op->call : "unknown";
	const char *path = st->path ? st->path : op ? op->path : 0;
	const char *text = err > 0 && err < 256 && error_text[err] ? error_text[err] : "Unknown error";
	const char *fields[3] = {op ? op->step : "unknown", call, path};
	int i;
	for (i = 0; i < 3; i++) {
		const char *f = fields[i] ? fields[i] : "";
		while (*f && p < names_end)
			*p++ = *f++;
		*p++ = 0;
	}
	p = put_num(p, end - 1, err);
	*p++ = 0;
	p = put_str(p, end, text);
	SC(SYS_write, st->rt[RT_ERRPIPE], record, p - record);
}

struct start {
	const struct plan_header *plan;
	int rt[MAX_RT];
	int nrt;
	volatile int tid; /* CLONE_CHILD_CLEARTID: 0 once the child has exec'd or died */
};

static int child_main(void *arg)
{
	struct start *start = arg;
	const struct plan_header *plan = start->plan;
	const struct op *ops = (const struct op *)(plan + 1);
	const char *scratch[plan->stack_words ? plan->stack_words : 1];
	struct child st;
	uint32_t i;
	int r = -EINVAL;

	st.op = 0;
	st.call = 0;
	st.path = 0;
	st.nrt = start->nrt;
	for (i = 0; i < (uint32_t)start->nrt; i++)
		st.rt[i] = start->rt[i];
	st.nanchors = 0;
	st.ntrees = 0;
	st.files_fd = -1;
	st.plan = plan;
	st.scratch = scratch;
	for (i = 0; i < plan->nops; i++) {
		st.op = &ops[i];
		st.call = 0;
		st.path = 0;
		r = run_op(&st, &ops[i]);
		if (r < 0)
			break;
	}
	if (r >= 0)
		r = -EINVAL; /* the plan ended without execve */
	report(&st, -r);
	SC(SYS_exit_group, EXIT_SETUP_FAILED);
	return EXIT_SETUP_FAILED;
}

/* ------------------------------------------------------------------ the zygote's side */

struct stack {
	void *base;
	size_t size;
	struct start *start; /* at its top */
	uint64_t serial;
	int shared; /* CLONE_VM: busy until start->tid is 0 */
};

#define MAX_STACKS 4096
static struct stack stacks[MAX_STACKS];
static int nstacks;
static uint64_t serial;

/*
 * Stacks whose child is done, kept for the next spawns: an mmap, an mprotect
 * and an munmap per spawn cost ~15 us, and the munmap of a shared mapping
 * flushes the TLB of every CPU running a child that shares it. Their pages
 * stay as the last child left them (the next child's stack only ever holds
 * its own frames, written before they are read).
 */
#define MAX_FREE_STACKS 64
static struct {
	void *base;
	size_t size;
} free_stacks[MAX_FREE_STACKS];
static int nfree;

static void release_stack(void *base, size_t size)
{
	if (nfree < MAX_FREE_STACKS) {
		free_stacks[nfree].base = base;
		free_stacks[nfree].size = size;
		nfree++;
	} else {
		munmap(base, size);
	}
}

/* A stack of exactly size bytes (its lowest page inaccessible), or NULL with errno set. */
static void *take_stack(size_t size)
{
	void *base;
	int i;
	for (i = nfree - 1; i >= 0; i--) {
		if (free_stacks[i].size == size) {
			base = free_stacks[i].base;
			free_stacks[i] = free_stacks[--nfree];
			return base;
		}
	}
	base = mmap(0, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK | MAP_NORESERVE, -1, 0);
	if (base == MAP_FAILED)
		return NULL;
	/* one page below it, inaccessible: an overflow faults instead of writing the zygote's memory */
	if (mprotect(base, 4096, PROT_NONE) != 0) {
		int err = errno;
		munmap(base, size);
		errno = err;
		return NULL;
	}
	return base;
}

/* Take back every stack whose child has exec'd or died. */
static void reclaim(void)
{
	int i = 0;
	while (i < nstacks) {
		if (!stacks[i].shared || __atomic_load_n(&stacks[i].start->tid, __ATOMIC_ACQUIRE) == 0) {
			release_stack(stacks[i].base, stacks[i].size);
			stacks[i] = stacks[--nstacks];
		} else {
			i++;
		}
	}
}

/*
 * Link an encoded plan in place: offsets become pointers. Once per plan, in
 * the zygote; the buffer must not move or change afterwards. 0 or -errno.
 */
EXPORT int anyns_plan_link(void *buffer, uint64_t size)
{
	struct plan_header *h = buffer;
	struct op *ops = (struct op *)(h + 1);
	char *base = buffer;
	uint32_t i;
	int j;
#define FIX(field)                                                                                 \
	do {                                                                                       \
		uint64_t off_ = (uint64_t)(uintptr_t)(field);                                      \
		if (off_ >= size)                                                                  \
			return -EINVAL;                                                            \
		*(void **)&(field) = off_ ? base + off_ : 0;                                       \
	} while (0)
	if (size < sizeof *h || memcmp(h->magic, PLAN_MAGIC, 8) != 0 || h->version != PLAN_VERSION || h->size != size ||
	    (uint64_t)h->nops * sizeof *ops > size - sizeof *h || h->linked)
		return -EINVAL;
	for (i = 0; i < h->nops; i++) {
		struct op *op = &ops[i];
		if (op->code >= OP_COUNT)
			return -EINVAL;
		FIX(op->step);
		FIX(op->call);
		FIX(op->path);
		for (j = 0; j < 4; j++)
			FIX(op->s[j]);
		FIX(op->data);
		if (op->data && (uint64_t)((const char *)op->data - base) + op->ndata > size)
			return -EINVAL;
		for (j = 0; j < 3; j++) {
			uint64_t off = (uint64_t)(uintptr_t)op->v[j], *slot;
			if (!off)
				continue;
			if (off % 8 || off >= size)
				return -EINVAL;
			for (slot = (uint64_t *)(base + off); (char *)slot < base + size && *slot; slot++) {
				if (*slot >= size)
					return -EINVAL;
				*slot = (uint64_t)(uintptr_t)(base + *slot);
			}
			if ((char *)slot >= base + size)
				return -EINVAL;
			op->v[j] = (const char *const *)(base + off);
		}
	}
	h->linked = (uint64_t)(uintptr_t)buffer;
	return 0;
#undef FIX
}

/*
 * Clone a child that runs the linked plan. flags: the clone flags (namespaces,
 * CLONE_PIDFD, CLONE_PARENT, CLONE_CLEAR_SIGHAND ...; CLONE_INTO_CGROUP with
 * cgroup_fd >= 0); shared_vm: CLONE_VM on a stack of its own, else an
 * ordinary copy-on-write clone. fds: the rt array (RT_* then the extra fds).
 * Returns the pid (the pidfd in *pidfd) or -errno. *serial_out is this
 * spawn's number: anyns_oldest_busy() says when its plan is free again.
 */
EXPORT long anyns_spawn(const void *plan, uint64_t flags, int cgroup_fd, int shared_vm, const int *fds, int nfds,
			int *pidfd, uint64_t *serial_out)
{
	const struct plan_header *h = plan;
	struct clone_args args;
	struct stack *s;
	sigset_t all, old;
	size_t size, words;
	long pid;

	if (!h->linked || nfds < RT_EXTRA || nfds > MAX_RT)
		return -EINVAL;
	reclaim();
	if (nstacks == MAX_STACKS)
		return -EAGAIN;
	/* 64 KiB for the ops (paths, records) and the exec vectors' copies; pages are touched lazily */
	words = h->stack_words + 2;
	size = (65536 + words * sizeof(char *) + sizeof(struct start) + 4095) & ~(size_t)4095;
	s = &stacks[nstacks];
	size += 4096; /* the guard page */
	s->base = take_stack(size);
	if (!s->base)
		return -errno;
	s->size = size;
	s->start = (struct start *)(((uintptr_t)s->base + size - sizeof(struct start)) & ~(uintptr_t)63);
	s->start->plan = h;
	s->start->nrt = nfds;
	for (int i = 0; i < nfds; i++)
		s->start->rt[i] = fds[i];
	s->start->tid = 1;
	s->shared = shared_vm;
	s->serial = ++serial;

	memset(&args, 0, sizeof args);
	args.flags = flags | CLONE_PIDFD | (shared_vm ? CLONE_VM | CLONE_CHILD_CLEARTID : 0);
	args.pidfd = (uint64_t)(uintptr_t)pidfd;
	args.child_tid = (uint64_t)(uintptr_t)&s->start->tid;
	args.exit_signal = 0;
	args.stack = (uint64_t)(uintptr_t)s->base + 4096;
	args.stack_size = ((uintptr_t)s->start - (uintptr_t)s->base - 4096) & ~(uintptr_t)15;
	if (cgroup_fd >= 0) {
		args.flags |= CLONE_INTO_CGROUP;
		args.cgroup = (uint64_t)cgroup_fd;
	}
	/* Every signal blocked across the clone: the child must not run a handler of the zygote's before
	 * CLONE_CLEAR_SIGHAND has taken effect, nor get one pending; it unblocks them itself ("signals"). */
	sigfillset(&all);
	sigprocmask(SIG_SETMASK, &all, &old);
	pid = anyns_clone3_raw(&args, sizeof args, child_main, s->start);
	sigprocmask(SIG_SETMASK, &old, 0);
	if (pid < 0) {
		release_stack(s->base, size);
		return pid;
	}
	*serial_out = s->serial;
	nstacks++;
	return pid;
}

/* The serial of the oldest spawn whose child may still read its plan (UINT64_MAX: none). */
EXPORT uint64_t anyns_oldest_busy(void)
{
	uint64_t oldest = UINT64_MAX;
	int i;
	reclaim();
	for (i = 0; i < nstacks; i++)
		if (stacks[i].serial < oldest)
			oldest = stacks[i].serial;
	return oldest;
}

/* Stacks still held by children in setup (for tests and the RSS check). */
EXPORT int anyns_busy_stacks(void)
{
	reclaim();
	return nstacks;
}

/* Once, in the zygote, before the first spawn; returns the native core's version. */
EXPORT int anyns_native_init(void)
{
	struct kernel_sigaction_ now;
	int i;
	for (i = 1; i < 256; i++)
		error_text[i] = strerror(i);
	/* which signals this process ignores (while it serves, the zygote ignores no other: it only
	 * installs handlers, which CLONE_CLEAR_SIGHAND resets); SIGPIPE and SIGXFSZ always, as CPython's */
	ignored_signals = 1ULL << (SIGPIPE - 1) | 1ULL << (SIGXFSZ - 1);
	for (i = 1; i <= 64; i++)
		if (i != SIGKILL && i != SIGSTOP && raw6(SYS_rt_sigaction, i, 0, (long)&now, 8, 0, 0) == 0 &&
		    now.handler == (unsigned long)SIG_IGN)
			ignored_signals |= 1ULL << (i - 1);
	return ANYNS_NATIVE_VERSION;
}

/* The sizes the Python encoder checks its layout against. */
EXPORT int anyns_layout(int what)
{
	switch (what) {
	case 0:
		return (int)sizeof(struct plan_header);
	case 1:
		return (int)sizeof(struct op);
	case 2:
		return OP_COUNT;
	case 3:
		return MAX_RT;
	}
	return -1;
}
