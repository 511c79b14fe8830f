/*
 * floor: anyns's physical limit. Runs an encoded op list (anyns/_zygote/_ops.py
 * encode(), written to a file by benchmarks/floor.py) through the native spawn
 * core, libanyns-spawn.so, N times with C in flight, with no Python anywhere
 * in the loop: no supervisor, no zygote loop, no protocol. What anyns does on
 * top of this (the supervisor's trio, the request and its answer, the
 * zygote's Python around each clone) is the difference between its figure and
 * this one.
 *
 *   floor --lib PATH --plan PATH --n N --concurrency C --flags X --shared-vm 0|1
 *         --skeleton FD --init FD [--status] [--warmup K] [--supervisor-pidfd FD]
 *
 * Per container, as the supervisor and the zygote do it:
 *   - an error pipe (O_CLOEXEC); with --status, the init's status pipe
 *     (O_CLOEXEC | O_NONBLOCK), its write end the plan's one extra fd;
 *   - anyns_spawn(plan, CLONE_PIDFD | CLONE_CLEAR_SIGHAND | flags, -1,
 *     shared_vm, rt, ...) where rt is the zygote's array: stdin (/dev/null),
 *     stdout, stderr, the error pipe, the parent's pidfd, the skeleton tree,
 *     the init, then the extra fds. CLONE_PARENT is left out: there is no
 *     supervisor here, the driver is the containers' parent and reaps them
 *     (with it, they would be children of whoever started the driver);
 *   - the write ends closed, then the pidfd and the error pipe watched with
 *     epoll: the pidfd's exit is reaped with waitid(P_PIDFD), the error pipe
 *     read to EOF. A failure record on it, an exit status other than 0, or a
 *     program status other than "0" on the status pipe counts as a failure,
 *     and the first one is printed.
 *
 * Prints one JSON object: n, concurrency, seconds, per_second, failures,
 * first_failure, p50_ms, p90_ms, p99_ms, max_ms (per container: spawn to
 * reap), cpu_self_ms (the driver's CPU time in the timed batch) and
 * cpu_children_ms (its reaped containers': the child's setup, the init and
 * the program; getrusage). Exit status 0, or 1 when a container failed, 2 on a usage or setup
 * error.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

typedef int (*init_fn)(void);
typedef int (*layout_fn)(int);
typedef int (*link_fn)(void *, uint64_t);
typedef long (*spawn_fn)(const void *, uint64_t, int, int, const int *, int, int *, uint64_t *);

enum { RT_STDIN, RT_STDOUT, RT_STDERR, RT_ERRPIPE, RT_SUPERVISOR, RT_SKELETON, RT_INIT, RT_EXTRA };

struct slot {
	int busy;
	int pidfd;     /* -1 once reaped */
	int err_r;     /* -1 once at EOF */
	int status_r;  /* -1 without a status pipe */
	int exit_code; /* the child's (the init's) exit: code, or 128 + signal */
	size_t nrecord;
	char record[1024];
	double started;
};

static spawn_fn spawn;
static const void *plan;
static uint64_t clone_flags;
static int shared_vm, with_status, devnull, parent_pidfd, skeleton_fd = -1, init_fd = -1, epfd;
static long failures;
static char first_failure[1200];
static double *latencies;
static long nlatencies;

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what)
{
	fprintf(stderr, "floor: %s: %s\n", what, strerror(errno));
	exit(2);
}

static void fail(const char *fmt, const char *detail, long number)
{
	failures++;
	if (!first_failure[0])
		snprintf(first_failure, sizeof first_failure, fmt, detail, number);
}

/* epoll data: slot index * 2 + (0 pidfd, 1 error pipe) */
static void watch(int fd, long key)
{
	struct epoll_event ev = {.events = EPOLLIN, .data.u64 = (uint64_t)key};
	if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
		die("epoll_ctl");
}

static int start(struct slot *s, long index)
{
	int err[2], status[2] = {-1, -1}, rt[RT_EXTRA + 1], nrt = RT_EXTRA, pidfd = -1;
	uint64_t serial;
	long pid;

	if (pipe2(err, O_CLOEXEC) < 0)
		die("pipe2");
	if (with_status && pipe2(status, O_CLOEXEC | O_NONBLOCK) < 0)
		die("pipe2");
	rt[RT_STDIN] = devnull;
	rt[RT_STDOUT] = 1;
	rt[RT_STDERR] = 2;
	rt[RT_ERRPIPE] = err[1];
	rt[RT_SUPERVISOR] = parent_pidfd;
	rt[RT_SKELETON] = skeleton_fd;
	rt[RT_INIT] = init_fd;
	if (with_status)
		rt[nrt++] = status[1];
	s->started = now();
	pid = spawn(plan, clone_flags, -1, shared_vm, rt, nrt, &pidfd, &serial);
	close(err[1]);
	if (with_status)
		close(status[1]);
	if (pid < 0) {
		close(err[0]);
		if (with_status)
			close(status[0]);
		errno = (int)-pid;
		die("anyns_spawn");
	}
	s->busy = 1;
	s->pidfd = pidfd;
	s->err_r = err[0];
	s->status_r = status[0];
	s->exit_code = -1;
	s->nrecord = 0;
	watch(pidfd, index * 2);
	watch(err[0], index * 2 + 1);
	return 0;
}

/* Both the exit and the error pipe's EOF are in: judge it, free the slot. */
static void finish(struct slot *s, int timed)
{
	char text[32];
	ssize_t n = 0;

	if (s->status_r >= 0) {
		n = read(s->status_r, text, sizeof text - 1);
		close(s->status_r);
	}
	if (s->nrecord) {
		size_t i;
		for (i = 0; i < s->nrecord; i++)
			if (!s->record[i])
				s->record[i] = '|';
		s->record[s->nrecord < sizeof s->record ? s->nrecord : sizeof s->record - 1] = 0;
		fail("setup failed: %s (exit %ld)", s->record, s->exit_code);
	} else if (s->exit_code != 0) {
		fail("%sexit status %ld", "", s->exit_code);
	} else if (with_status && (n != 1 || text[0] != '0')) {
		text[n > 0 ? n : 0] = 0;
		fail("program status %s (%ld bytes)", n > 0 ? text : "missing", (long)n);
	}
	if (timed)
		latencies[nlatencies++] = now() - s->started;
	s->busy = 0;
}

static void event(struct slot *slots, uint64_t key, int timed)
{
	struct slot *s = &slots[key / 2];
	if (key % 2 == 0) {
		siginfo_t info;
		memset(&info, 0, sizeof info);
		if (syscall(SYS_waitid, P_PIDFD, s->pidfd, &info, WEXITED, NULL) < 0)
			die("waitid");
		s->exit_code = info.si_code == CLD_EXITED ? info.si_status : 128 + info.si_status;
		epoll_ctl(epfd, EPOLL_CTL_DEL, s->pidfd, NULL);
		close(s->pidfd);
		s->pidfd = -1;
	} else {
		char buf[512];
		ssize_t n = read(s->err_r, buf, sizeof buf);
		if (n > 0) {
			size_t room = sizeof s->record - s->nrecord;
			size_t take = (size_t)n < room ? (size_t)n : room;
			memcpy(s->record + s->nrecord, buf, take);
			s->nrecord += take;
			return;
		}
		if (n < 0 && errno == EINTR)
			return;
		epoll_ctl(epfd, EPOLL_CTL_DEL, s->err_r, NULL);
		close(s->err_r);
		s->err_r = -1;
	}
	if (s->pidfd < 0 && s->err_r < 0)
		finish(s, timed);
}

/* n containers, exactly `concurrency` in flight; the wall seconds */
static double batch(long n, long concurrency, int timed)
{
	struct slot *slots = calloc((size_t)concurrency, sizeof *slots);
	struct epoll_event events[64];
	long started = 0, done = 0, i;
	double t0 = now();

	if (!slots)
		die("calloc");
	for (i = 0; i < concurrency && started < n; i++, started++)
		start(&slots[i], i);
	while (done < n) {
		int k, ready = epoll_wait(epfd, events, 64, -1);
		if (ready < 0) {
			if (errno == EINTR)
				continue;
			die("epoll_wait");
		}
		for (k = 0; k < ready; k++) {
			uint64_t key = events[k].data.u64;
			struct slot *s = &slots[key / 2];
			event(slots, key, timed);
			if (!s->busy) {
				done++;
				if (started < n) {
					start(s, (long)(key / 2));
					started++;
				}
			}
		}
	}
	free(slots);
	return now() - t0;
}

static int compare(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double cpu_ms(int who)
{
	struct rusage ru;
	getrusage(who, &ru);
	return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e3 +
	       (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e3;
}

static double percentile(double q)
{
	double pos = (double)(nlatencies - 1) * q / 100.0;
	long lo = (long)pos, hi = lo + 1 < nlatencies ? lo + 1 : lo;
	return (latencies[lo] + (latencies[hi] - latencies[lo]) * (pos - (double)lo)) * 1000.0;
}

static void *load_plan(const char *path, uint64_t *size)
{
	struct stat st;
	void *buffer;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) < 0)
		die(path);
	buffer = aligned_alloc(64, ((size_t)st.st_size + 63) & ~(size_t)63);
	if (!buffer)
		die("aligned_alloc");
	if (read(fd, buffer, (size_t)st.st_size) != st.st_size)
		die("read plan");
	close(fd);
	*size = (uint64_t)st.st_size;
	return buffer; /* never freed: a child in setup may read it until it has exec'd */
}

static void usage(void)
{
	fprintf(stderr, "usage: floor --lib PATH --plan PATH --n N --concurrency C --flags X --shared-vm 0|1 "
			"--skeleton FD --init FD [--status] [--warmup K] [--supervisor-pidfd FD]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	const char *lib = 0, *plan_path = 0;
	long n = 1000, concurrency = 16, warmup = 20;
	uint64_t size;
	void *handle, *buffer;
	init_fn init;
	link_fn link_plan;
	int i, err;
	double seconds, self0, children0;

	parent_pidfd = -1;
	for (i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : 0;
		if (!strcmp(a, "--status")) {
			with_status = 1;
			continue;
		}
		if (!v)
			usage();
		i++;
		if (!strcmp(a, "--lib"))
			lib = v;
		else if (!strcmp(a, "--plan"))
			plan_path = v;
		else if (!strcmp(a, "--n"))
			n = strtol(v, 0, 10);
		else if (!strcmp(a, "--concurrency"))
			concurrency = strtol(v, 0, 10);
		else if (!strcmp(a, "--warmup"))
			warmup = strtol(v, 0, 10);
		else if (!strcmp(a, "--flags"))
			clone_flags = strtoull(v, 0, 0);
		else if (!strcmp(a, "--shared-vm"))
			shared_vm = (int)strtol(v, 0, 10);
		else if (!strcmp(a, "--skeleton"))
			skeleton_fd = (int)strtol(v, 0, 10);
		else if (!strcmp(a, "--init"))
			init_fd = (int)strtol(v, 0, 10);
		else if (!strcmp(a, "--supervisor-pidfd"))
			parent_pidfd = (int)strtol(v, 0, 10);
		else
			usage();
	}
	if (!lib || !plan_path || n < 1 || concurrency < 1 || warmup < 0)
		usage();

	/* As the zygote: never dumpable, modes exactly as the plan says. No PR_SET_PDEATHSIG: it is tied to
	 * the thread that started us, and trio starts processes from a worker thread that ends when idle. */
	prctl(PR_SET_DUMPABLE, 0);
	umask(0);
	devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (devnull < 0)
		die("/dev/null");
	if (parent_pidfd < 0) {
		/* The children's parent is this process: the pidfd their pdeathsig op polls is ours. */
		parent_pidfd = (int)syscall(SYS_pidfd_open, getpid(), 0);
		if (parent_pidfd < 0)
			die("pidfd_open");
	}
	handle = dlopen(lib, RTLD_NOW | RTLD_LOCAL);
	if (!handle) {
		fprintf(stderr, "floor: %s\n", dlerror());
		return 2;
	}
	init = (init_fn)dlsym(handle, "anyns_native_init");
	link_plan = (link_fn)dlsym(handle, "anyns_plan_link");
	spawn = (spawn_fn)dlsym(handle, "anyns_spawn");
	if (!init || !link_plan || !spawn) {
		fprintf(stderr, "floor: %s lacks the spawn core's entry points\n", lib);
		return 2;
	}
	init();
	buffer = load_plan(plan_path, &size);
	err = link_plan(buffer, size);
	if (err) {
		fprintf(stderr, "floor: the native core refused the plan: %s\n", strerror(-err));
		return 2;
	}
	plan = buffer;
	clone_flags |= CLONE_PIDFD | CLONE_CLEAR_SIGHAND;
	epfd = epoll_create1(EPOLL_CLOEXEC);
	if (epfd < 0)
		die("epoll_create1");
	latencies = calloc((size_t)n, sizeof *latencies);
	if (!latencies)
		die("calloc");

	if (warmup)
		batch(warmup, concurrency < warmup ? concurrency : warmup, 0);
	failures = 0;
	first_failure[0] = 0;
	self0 = cpu_ms(RUSAGE_SELF);
	children0 = cpu_ms(RUSAGE_CHILDREN);
	seconds = batch(n, concurrency, 1);
	self0 = cpu_ms(RUSAGE_SELF) - self0;
	children0 = cpu_ms(RUSAGE_CHILDREN) - children0;
	qsort(latencies, (size_t)nlatencies, sizeof *latencies, compare);
	printf("{\"n\": %ld, \"concurrency\": %ld, \"seconds\": %.6f, \"per_second\": %.2f, \"failures\": %ld, "
	       "\"p50_ms\": %.3f, \"p90_ms\": %.3f, \"p99_ms\": %.3f, \"max_ms\": %.3f, \"cpu_self_ms\": %.1f, "
	       "\"cpu_children_ms\": %.1f, \"first_failure\": \"",
	       n, concurrency, seconds, (double)n / seconds, failures, percentile(50), percentile(90),
	       percentile(99), latencies[nlatencies - 1] * 1000.0, self0, children0);
	for (i = 0; first_failure[i]; i++) {
		unsigned char c = (unsigned char)first_failure[i];
		if (c == '"' || c == '\\')
			printf("\\%c", c);
		else if (c < 0x20 || c > 0x7e)
			printf("\\u%04x", c);
		else
			putchar(c);
	}
	printf("\"}\n");
	return failures ? 1 : 0;
}
