/* cffi_floor.h -- the cdef of cffi_floor.c (read by benchmarks/floor.py). */
struct lane {
    struct ur_ring *ring;
    struct ur_inbox *inbox;
    const void *images;
    unsigned nsqes;
    const struct ur_patch *patches;
    unsigned npatches;
    int64_t *values;
    uint64_t ud;
};

int lane_run(struct lane *lane, const char *path);
