/* Shifts a process's wall clock by TASKQ_CLOCK_SHIFT_MS milliseconds (may be negative):
 * gettimeofday, time and clock_gettime of the realtime clocks. The monotonic clocks stay
 * true, as on a real host whose clock is off.
 *
 * Why not libfaketime: redis-server is linked with jemalloc, which calls clock_gettime
 * while libfaketime initialises; the process hangs (wolfcw/libfaketime#130, open). This
 * shim asks the kernel directly (no dlsym, no allocation), so it can run inside malloc. */
#define _GNU_SOURCE
#include <stdlib.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static long long shift_us(void) {
    static int read_once = 0;
    static long long shift = 0;
    if (!read_once) {
        const char *value = getenv("TASKQ_CLOCK_SHIFT_MS");
        shift = value ? atoll(value) * 1000LL : 0;
        read_once = 1;
    }
    return shift;
}

static void shift_timespec(struct timespec *ts) {
    long long ns = (long long)ts->tv_nsec + (shift_us() % 1000000LL) * 1000LL;
    long long s = (long long)ts->tv_sec + shift_us() / 1000000LL;
    while (ns < 0) { ns += 1000000000LL; s -= 1; }
    while (ns >= 1000000000LL) { ns -= 1000000000LL; s += 1; }
    ts->tv_sec = (time_t)s;
    ts->tv_nsec = (long)ns;
}

int clock_gettime(clockid_t clock, struct timespec *ts) {
    int rc = (int)syscall(SYS_clock_gettime, clock, ts);
    if (rc == 0 && (clock == CLOCK_REALTIME || clock == CLOCK_REALTIME_COARSE)) {
        shift_timespec(ts);
    }
    return rc;
}

int gettimeofday(struct timeval *tv, void *tz) {
    struct timespec ts;
    int rc = (int)syscall(SYS_clock_gettime, CLOCK_REALTIME, &ts);
    if (rc != 0) return rc;
    shift_timespec(&ts);
    tv->tv_sec = ts.tv_sec; /* glibc declares tv nonnull */
    tv->tv_usec = ts.tv_nsec / 1000;
    (void)tz;
    return 0;
}

time_t time(time_t *out) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (out) *out = ts.tv_sec;
    return ts.tv_sec;
}
