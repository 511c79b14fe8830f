/*
 * anyns-init: the process between a container's program and the kernel.
 *
 * The cloned child execs this program (execveat on a sealed memfd copy the
 * zygote made) as its last setup step, so no process of a container maps
 * the zygote's memory: a fork of the zygote carried its heap, cached plans
 * of other containers and their environment included, readable through
 * /proc/PID/mem with CAP_SYS_PTRACE. Plain C, no Python headers, linked
 * statically (it runs in any root, a busybox directory without a libc too).
 *
 * Modes (the flags of the control record, below):
 *   0               pid 1 of a container's pid namespace (ContainerSpec.init):
 *                   vfork+execve the program as pid 2 and serve as its init;
 *   FORK            the waiter of a rootless exec (it stays outside the
 *                   container's pid namespace, its child is born inside): fork,
 *                   the program dies with us (PR_SET_PDEATHSIG, set in the
 *                   child, which then checks we still live);
 *   FORK|SUBREAPER  no pid namespace and no cgroup (rootless): as FORK, and a
 *                   child subreaper (PR_SET_CHILD_SUBREAPER, as `tini -s`)
 *                   that kills what is left of the program's processes when
 *                   it ends;
 *   HOLD            as 0, for a supervisor that reads files of the container
 *                   after its program's end (run(collect=...)): when the
 *                   program has ended, kill every other process of the pid
 *                   namespace (kill(-1, SIGKILL) from its pid 1) and reap
 *                   them, report the status, then hold the container (its
 *                   mount namespace lives as long as we do) until the status
 *                   fd, a socket, reads EOF: the supervisor's release. Also
 *                   SIGNAL_END_ALL from outside the namespace (the
 *                   supervisor's budget kill) ends the program and everything
 *                   else but us, which then goes as above.
 *
 * The loop, in every mode, with the signals below blocked and taken by
 * sigwaitinfo (no handler runs):
 *   SIGCHLD: reap every child that has exited (orphans included); when the
 *     program is among them, report its status and exit;
 *   SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH: forward to
 *     the program, unless the kernel sent it (SI_KERNEL: a terminal's ^C
 *     reaches the program directly, in the same foreground process group).
 * The program's exact status (its exit code, or -N for signal N) goes to
 * the status fd as decimal text before the init exits with the closest code
 * an exit can give (128+N). If no candidate path starts, a failure record
 * goes to the error channel as the set-up child writes one (NUL-separated
 * step, call, path, errno, message) and the init exits 127. Otherwise the
 * error channel is closed once the program is exec'd: EOF tells the
 * supervisor the program runs.
 *
 * How the control data arrives: argv is just "anyns-init", because
 * /proc/PID/cmdline can be read by every process that sees the pid (no
 * ptrace check); it shows nothing of the supervisor. Everything else comes
 * in the environment block, which only processes allowed to ptrace us may
 * read (/proc/PID/environ, and we are not dumpable from the first
 * instruction on), and which holds nothing but this container's own data:
 *   envp[0]                  "ANYNS_INIT=<flags> <status fd> <error fd> <candidates> <argc>"
 *   envp[1 .. candidates]    the paths to try, in order, like execvp(3)
 *   next argc entries        the program's argv
 *   the rest                 the program's environment (NULL-terminated by the kernel)
 * It costs no syscall and no fd (a pipe or memfd would cost both), and the
 * kernel copies it for us; the program gets only its own argv and env.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define FLAG_FORK 1
#define FLAG_SUBREAPER 2
#define FLAG_HOLD 4
/* A real-time signal by its kernel number (glibc's and musl's SIGRTMIN differ): _init.END_ALL. */
#define SIGNAL_END_ALL 40
#define CONTROL "ANYNS_INIT="
#define EXIT_SETUP_FAILED 127
#define STATUS_FD 3
#define CHILDREN_FD 4

struct control {
	unsigned flags;
	int status_fd;
	int error_fd;
	char **candidates;
	unsigned ncandidates;
	char **argv;
	char **envp;
};

static const int forwarded[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH};

static int parse_number(const char **p, long *out)
{
	long n = 0;
	const char *s = *p;
	int neg = (*s == '-');
	if (neg)
		s++;
	if (*s < '0' || *s > '9')
		return -1;
	while (*s >= '0' && *s <= '9') {
		n = n * 10 + (*s++ - '0');
		if (n > 1 << 24)
			return -1;
	}
	while (*s == ' ')
		s++;
	*p = s;
	*out = neg ? -n : n;
	return 0;
}

/*
 * The control record and the arrays after it (see the top of this file); 0
 * if it is not there. The pointers are shifted one slot down in place, so
 * that argv gets its NULL without a copy of any size:
 * [candidates..., argv..., NULL, env..., NULL].
 */
static int parse(char **envp, struct control *c)
{
	long flags, status, error, ncand, argc;
	const char *p;
	unsigned long total = 0, i;

	if (!envp[0] || strncmp(envp[0], CONTROL, sizeof CONTROL - 1) != 0)
		return 0;
	p = envp[0] + sizeof CONTROL - 1;
	if (parse_number(&p, &flags) || parse_number(&p, &status) || parse_number(&p, &error) ||
	    parse_number(&p, &ncand) || parse_number(&p, &argc) || *p)
		return 0;
	while (envp[1 + total])
		total++;
	if (flags < 0 || flags > (FLAG_FORK | FLAG_SUBREAPER | FLAG_HOLD) ||
	    ((flags & FLAG_HOLD) && flags != FLAG_HOLD) || status < 0 || error < 0 || ncand < 1 ||
	    argc < 1 || (unsigned long)(ncand + argc) > total)
		return 0;
	for (i = 0; i < (unsigned long)(ncand + argc); i++)
		envp[i] = envp[i + 1];
	envp[ncand + argc] = NULL;
	c->flags = (unsigned)flags;
	c->status_fd = (int)status;
	c->error_fd = (int)error;
	c->candidates = envp;
	c->ncandidates = (unsigned)ncand;
	c->argv = envp + ncand;
	c->envp = envp + ncand + argc + 1;
	return 1;
}

static void write_all(int fd, const char *data, size_t size)
{
	while (size) {
		ssize_t n = write(fd, data, size);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return;
		data += n;
		size -= (size_t)n;
	}
}

static size_t format_int(char *out, long value)
{
	char digits[24];
	size_t n = 0, len = 0;
	unsigned long v = value < 0 ? (unsigned long)-value : (unsigned long)value;
	do {
		digits[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	if (value < 0)
		out[len++] = '-';
	while (n)
		out[len++] = digits[--n];
	return len;
}

/*
 * The failure record the set-up child writes (_protocol.encode_failure): one
 * write of the NUL-separated fields step, call, path, errno, message, at
 * most 4096 bytes.
 */
static void report_failure(int fd, const char *call, const char *path, int err)
{
	static char record[4096];
	char number[24];
#ifdef __GLIBC__
	const char *message = strerrordesc_np(err); /* the text Python's os.strerror gives, untranslated */
#else
	const char *message = strerror(err); /* musl: no locales, the same texts for exec's errors */
#endif
	const char *fields[5];
	size_t at = 0, i;

	number[format_int(number, err)] = '\0';
	fields[0] = "exec";
	fields[1] = call;
	fields[2] = path;
	fields[3] = number;
	fields[4] = message ? message : "Unknown error";
	for (i = 0; i < 5; i++) {
		size_t n = strlen(fields[i]);
		if (i && at < sizeof record)
			record[at++] = '\0';
		if (n > sizeof record - at)
			n = sizeof record - at;
		memcpy(record + at, fields[i], n);
		at += n;
	}
	write_all(fd, record, at);
}

/* execvp(3)'s rule: ENOENT and ENOTDIR try the next path, EACCES too but is the error kept. */
static int next_candidate(int err, unsigned ncandidates, int *kept)
{
	if ((err != ENOENT && err != ENOTDIR && err != EACCES) || ncandidates == 1) {
		*kept = err;
		return 0;
	}
	if (!*kept || (err == EACCES && *kept != EACCES))
		*kept = err;
	return 1;
}

/*
 * Mode 0: vfork and execve, as glibc's posix_spawn does (musl's opens a pipe
 * for the exec error, and the program's RLIMIT_NOFILE, in force already,
 * may not leave room for one: `nofile=4` with a terminal). The child shares
 * our memory until it execs, so an exec error comes back in a variable, and
 * vfork returns once the program is exec'd or has failed. It needs no fd. The
 * seccomp filter allows vfork (and clone without namespace flags, which is
 * what vfork is on architectures without the syscall). A path that does not
 * exist is skipped without a try: a failed spawn costs a process, and a pid
 * (the program would not be pid 2).
 */
static int spawn_one(const struct control *c, const char *path, pid_t *program)
{
	static volatile int exec_error;
	sigset_t none;
	pid_t pid;

	sigemptyset(&none);
	exec_error = 0;
	pid = vfork();
	if (pid == 0) {
		/* only the stack and exec_error are touched before execve or _exit */
		sigprocmask(SIG_SETMASK, &none, NULL);
		execve(path, c->argv, c->envp);
		exec_error = errno ? errno : ENOEXEC;
		_exit(127);
	}
	if (pid < 0)
		return errno;
	if (exec_error) {
		int err = exec_error;
		while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
			;
		return err;
	}
	*program = pid;
	return 0;
}

static int spawn_program(const struct control *c, pid_t *program)
{
	int kept = 0, err = ENOENT;
	unsigned i;

	for (i = 0; i < c->ncandidates; i++) {
		struct stat st;
		if (c->ncandidates > 1 && stat(c->candidates[i], &st) != 0) {
			if (!kept)
				kept = ENOENT;
			continue;
		}
		err = spawn_one(c, c->candidates[i], program);
		if (err == 0)
			break;
		if (!next_candidate(err, c->ncandidates, &kept))
			break;
	}
	return err == 0 ? 0 : (kept ? kept : err);
}

/*
 * FORK: the program must die with us, which posix_spawn cannot ask. The
 * child sets PR_SET_PDEATHSIG, then checks we still live through a pidfd of
 * ours (getppid() says 0 across pid namespaces), and execs; an exec failure
 * comes back on a close-on-exec pipe.
 */
static int fork_program(const struct control *c, pid_t *program)
{
	int ready[2], me, err = 0;
	ssize_t n;
	pid_t pid;

	me = (int)syscall(SYS_pidfd_open, getpid(), 0);
	if (pipe2(ready, O_CLOEXEC) != 0) {
		err = errno;
		if (me >= 0)
			close(me);
		return err;
	}
	pid = fork();
	if (pid < 0) {
		err = errno;
		close(ready[0]);
		close(ready[1]);
		if (me >= 0)
			close(me);
		return err;
	}
	if (pid == 0) {
		sigset_t none;
		struct pollfd alive = {.fd = me, .events = POLLIN};
		unsigned i;
		int kept = 0;

		prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
		if (me >= 0 && poll(&alive, 1, 0) > 0) /* we died before the prctl */
			_exit(EXIT_SETUP_FAILED);
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		for (i = 0; i < c->ncandidates; i++) {
			execve(c->candidates[i], c->argv, c->envp);
			if (!next_candidate(errno, c->ncandidates, &kept))
				break;
		}
		write_all(ready[1], (const char *)&kept, sizeof kept);
		_exit(EXIT_SETUP_FAILED);
	}
	close(ready[1]);
	if (me >= 0)
		close(me);
	do
		n = read(ready[0], &err, sizeof err);
	while (n < 0 && errno == EINTR);
	close(ready[0]);
	if (n == (ssize_t)sizeof err) {
		while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
			;
		return err ? err : ENOEXEC;
	}
	*program = pid;
	return 0;
}

/* Move ``fd`` to number ``to`` (-1: the lowest free one), close-on-exec; where it was if that fails. */
static int move_fd(int fd, int to)
{
	int moved;

	if (fd < 0 || fd == to)
		return fd;
	moved = to < 0 ? fcntl(fd, F_DUPFD_CLOEXEC, 0) : dup3(fd, to, O_CLOEXEC);
	if (moved < 0)
		return fd;
	close(fd);
	return moved;
}

/* ``*fd`` to number ``to``, moving ``*other`` out of the way first if it is there. */
static void place(int *fd, int to, int *other)
{
	if (*fd < 0 || *fd == to)
		return;
	if (*other == to)
		*other = move_fd(*other, -1);
	*fd = move_fd(*fd, to);
}

static void close_range_or_loop(int first, int last)
{
	if (first > last)
		return;
	if (syscall(SYS_close_range, (unsigned)first, (unsigned)last, 0) == 0)
		return;
	for (; first <= last && first < 4096; first++) /* close_range refused (a filter): the usual range */
		close(first);
}

/*
 * The init never execs again, so close-on-exec fds would stay open as long
 * as the container runs: keep the status fd (as 3), a subreaper's list of
 * children (as 4) and, until the caller closes it, the error channel; close
 * 0-2 (the stdio pipes) and everything else. Once the channel is closed the
 * init holds nothing but what it keeps for good.
 */
static void keep_only(int *status_fd, int *children_fd, int *error_fd)
{
	int keep[3], i, j, first = 0;

	close(0);
	close(1);
	close(2);
	if (*children_fd == STATUS_FD)
		*children_fd = move_fd(*children_fd, -1);
	place(status_fd, STATUS_FD, error_fd);
	if (*status_fd != CHILDREN_FD)
		place(children_fd, CHILDREN_FD, error_fd);
	keep[0] = *status_fd;
	keep[1] = *children_fd;
	keep[2] = *error_fd;
	for (i = 0; i < 3; i++) /* sort the three */
		for (j = i + 1; j < 3; j++)
			if (keep[j] < keep[i]) {
				int t = keep[i];
				keep[i] = keep[j];
				keep[j] = t;
			}
	for (i = 0; i < 3; i++) {
		if (keep[i] < first)
			continue;
		close_range_or_loop(first, keep[i] - 1);
		first = keep[i] + 1;
	}
	close_range_or_loop(first, ~0U >> 1);
}

/* Reap every child that has exited; 1 and its wait status if the program was among them. */
static int reap(pid_t program, int *status)
{
	int found = 0, st;
	pid_t pid;

	while ((pid = waitpid(-1, &st, WNOHANG | __WALL)) > 0) {
		if (pid == program) {
			*status = st;
			found = 1;
		}
	}
	return found;
}

/*
 * A subreaper whose program has ended: SIGKILL every child left (orphans of
 * the program reparented to us), reap, and again, until none is left. The
 * list comes from /proc/self/task/TID/children, opened before the program
 * started; without it, nothing can be found, so nothing is waited for.
 */
static void kill_leftovers(int children_fd)
{
	static char list[4096];

	if (children_fd < 0)
		return;
	for (;;) {
		ssize_t n = pread(children_fd, list, sizeof list - 1, 0);
		char *p = list;
		if (n < 0)
			return;
		list[n] = '\0';
		while (*p) {
			long pid = 0;
			while (*p == ' ')
				p++;
			while (*p >= '0' && *p <= '9')
				pid = pid * 10 + (*p++ - '0');
			/* Our child, not reaped yet: its pid is still its own. Only whole numbers (followed
			 * by their space): a list longer than the buffer is cut, the rest comes next round. */
			if (pid > 0 && *p == ' ')
				kill((pid_t)pid, SIGKILL);
			while (*p && *p != ' ')
				p++;
		}
		if (waitpid(-1, NULL, __WALL) < 0 && errno == ECHILD)
			return;
		while (waitpid(-1, NULL, WNOHANG | __WALL) > 0)
			;
	}
}

/*
 * HOLD, pid 1 of the namespace: SIGKILL every other process in it (kill(-1)
 * spares only the caller) and reap them, again until none is left (one may
 * have forked meanwhile).
 */
static void end_all_but_us(void)
{
	for (;;) {
		kill(-1, SIGKILL);
		if (waitpid(-1, NULL, __WALL) < 0 && errno == ECHILD)
			return;
	}
}

/*
 * Report the program's wait status on the status fd and exit with the closest code an exit can give.
 * HOLD: first end everything else; after the report, wait for the supervisor's release (EOF).
 */
static void exit_like(int status, int status_fd, unsigned flags)
{
	char text[24];
	int code = WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);

	if (flags & FLAG_HOLD)
		end_all_but_us();
	write_all(status_fd, text, format_int(text, code));
	if (flags & FLAG_HOLD) {
		char byte;
		ssize_t n;
		do
			n = read(status_fd, &byte, 1);
		while (n > 0 || (n < 0 && errno == EINTR));
	}
	_exit(code >= 0 ? code : 128 - code);
}

int main(int argc, char **argv, char **envp)
{
	static const char usage[] = "anyns-init: the init of anyns containers; anyns starts it, not a shell\n";
	struct control c;
	sigset_t waited;
	pid_t program = 0;
	int err, status, children_fd = -1;
	unsigned i;

	(void)argc;
	(void)argv;
	/* Exec made us dumpable again: neither our memory nor /proc/PID/{environ,mem} for the program. */
	prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
	prctl(PR_SET_NAME, "anyns-init", 0, 0, 0); /* exec named us after the fd number */
	if (!parse(envp, &c)) {
		write_all(2, usage, sizeof usage - 1);
		return 2;
	}
	/* The program must not inherit these two. */
	fcntl(c.status_fd, F_SETFD, FD_CLOEXEC);
	fcntl(c.error_fd, F_SETFD, FD_CLOEXEC);
	/* Blocked before the program starts, so that no signal meant for it is lost before the loop runs.
	 * SIGCHLD back to SIG_DFL: a SIG_IGN kept through exec would have the kernel reap the program. */
	signal(SIGCHLD, SIG_DFL);
	sigemptyset(&waited);
	sigaddset(&waited, SIGCHLD);
	for (i = 0; i < sizeof forwarded / sizeof forwarded[0]; i++)
		sigaddset(&waited, forwarded[i]);
	if (c.flags & FLAG_HOLD)
		sigaddset(&waited, SIGNAL_END_ALL);
	sigprocmask(SIG_BLOCK, &waited, NULL);
	if (c.flags & FLAG_SUBREAPER) {
		char path[64] = "/proc/self/task/";
		size_t at = strlen(path);
		at += format_int(path + at, getpid());
		memcpy(path + at, "/children", sizeof "/children");
		prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
		children_fd = open(path, O_RDONLY | O_CLOEXEC);
	}
	err = (c.flags & FLAG_FORK) ? fork_program(&c, &program) : spawn_program(&c, &program);
	if (err) {
		report_failure(c.error_fd, "execve", c.argv[0], err);
		_exit(EXIT_SETUP_FAILED);
	}
	keep_only(&c.status_fd, &children_fd, &c.error_fd);
	close(c.error_fd); /* the program runs: the supervisor may know */
	for (;;) {
		siginfo_t info;
		int sig = sigwaitinfo(&waited, &info);
		if (sig < 0)
			continue;
		if (sig == SIGNAL_END_ALL) {
			/* Only from outside the namespace (si_pid 0 there): the supervisor. The program's
			 * end (SIGCHLD) then takes the usual way. */
			if (info.si_code == SI_USER && info.si_pid == 0)
				kill(-1, SIGKILL);
			continue;
		}
		if (sig != SIGCHLD) {
			if (info.si_code != SI_KERNEL)
				kill(program, sig);
			continue;
		}
		if (reap(program, &status)) {
			if (c.flags & FLAG_SUBREAPER)
				kill_leftovers(children_fd);
			exit_like(status, c.status_fd, c.flags);
		}
	}
}
