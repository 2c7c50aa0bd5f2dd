/*
 * ring.h -- the declarations cffi sees (read by _ring_build.py as the cdef)
 * and the C source includes.  Mechanism only: every decision is made in
 * Python.  Every function returns 0 or a count on success and -errno on
 * failure; none leaves its error in errno, prints, or exits.
 */

/* One io_uring instance: the fd and the three shared mappings.  The kernel
 * owns the SQ head and the CQ tail; we own the SQ tail and the CQ head.
 * `pending` counts SQEs published in the SQ ring but not yet handed to
 * io_uring_enter. */
struct ur_ring {
    int fd;
    unsigned features;      /* IORING_FEAT_* reported by io_uring_setup */
    unsigned setup_flags;   /* the flags the ring was created with */
    unsigned sq_entries;
    unsigned cq_entries;
    unsigned pending;
    /* private: the mappings (ring pointers are not for Python) */
    void *sq_map;
    void *cq_map;
    void *sqe_map;
    size_t sq_map_size;
    size_t cq_map_size;
    size_t sqe_map_size;
    unsigned *sq_head;
    unsigned *sq_tail;
    unsigned *sq_mask;
    unsigned *sq_flags;
    unsigned *cq_head;
    unsigned *cq_tail;
    unsigned *cq_mask;
    void *sqes;
    void *cqes;
};

/* One patch point: write values[value] + addend, `width` bytes wide
 * (4 or 8), at byte `offset` of SQE number `sqe` of the run's images. */
struct ur_patch {
    uint16_t sqe;
    uint8_t offset;
    uint8_t width;
    uint16_t value;
    uint16_t reserved;
    int64_t addend;
};

/* The user_data layout (plan.py takes these from here): bits 12-27 hold an
 * execution's place k in its batch, bits 28-43 the batch's table entry. */
#define UR_UD_K_SHIFT 12
#define UR_UD_K_MASK 65535
#define UR_UD_BATCH_SHIFT 28
#define UR_UD_BATCH_MASK 65535

/* ur_reap_split's description of a run of clean endings: batch, end, lowest
 * res, highest res, first k (or -1) */
#define UR_RUN_FIELDS 5
/* A posted CQE that has not come, as the bits of its int32 slot (INT32_MIN:
 * no kernel result is this low). */
#define UR_NOT_POSTED_BITS 0x80000000

/* The inbox of ur_reap_box: the fields of its box (unsigned each).
 * UR_BOX_MORE: set by ur_cycle when the reaper must go round again (SQEs
 * queued by routing, CQEs in the kernel's overflow list, or a full inbox). */
#define UR_BOX_OTHERS 0
#define UR_BOX_OTHERS_DONE 1
#define UR_BOX_CLEAN 2
#define UR_BOX_RUNS 3
#define UR_BOX_RUNS_DONE 4
#define UR_BOX_MORE 5
#define UR_BOX_FIELDS 6

/* A batch's posted CQEs on its clean path: the CQEs that atoms before the
 * last post even when all goes well (hard-linked reads, say), which
 * ur_reap_split stores here instead of handing them to Python one by one.
 * res[k * width + j] is execution k's CQE of the j-th posted atom
 * (Python fills it with -2**31 first: not come yet); place[atom byte] is j + 1, 0 for an atom
 * that does not post.  Owned by Python: res by the batch, place by its plan;
 * the backend sets res to NULL before either can go (the batch ends, or an
 * execution of it leaves the clean path: Python routes its CQEs then). */
struct ur_posted {
    int32_t *res;
    const uint8_t *place;
    unsigned width;
    unsigned n;
};

/* Where ur_reap_box puts the CQEs it takes (all arrays have room for max;
 * clean_runs for max runs).  Owned by Python (cffi allocations kept by the
 * backend); C only writes into it, never frees it. */
struct ur_inbox {
    const uint64_t *fast_ud;  /* per batch entry: its clean ending, 0: none */
    struct ur_posted *posted; /* per batch entry: where its posted CQEs go */
    unsigned nbatches;
    unsigned max;
    uint64_t *user_data;      /* the others, in ring order */
    int32_t *res;
    uint32_t *clean_k;        /* the clean endings */
    int32_t *clean_res;
    int32_t *clean_runs;      /* UR_RUN_FIELDS per run */
    unsigned *box;            /* UR_BOX_FIELDS */
    uint64_t taken;           /* CQEs ever taken from the CQ ring (ur_reap_box) */
};

/* cold: set up and tear down */
int ur_setup(struct ur_ring *ring, unsigned entries, unsigned cq_entries,
             unsigned flags);
void ur_teardown(struct ur_ring *ring);
int ur_probe_ops(int ring_fd, uint8_t *supported, unsigned n);
int ur_register_sparse_files(struct ur_ring *ring, unsigned n);
int ur_update_files(struct ur_ring *ring, unsigned offset, const int32_t *fds,
                    unsigned n);
int ur_register_eventfd(struct ur_ring *ring, int fd);

/* hot: submit and reap, once per batch */
int ur_push(struct ur_ring *ring, const void *images, unsigned first,
            unsigned count, const struct ur_patch *patches, unsigned npatches,
            const int64_t *values, unsigned vstride, unsigned nexec,
            uint8_t last_flags_clear, uint64_t ud_first, uint64_t ud_step);
int ur_enter(struct ur_ring *ring, unsigned min_complete, int64_t timeout_ns);
int ur_reap_split(struct ur_ring *ring, const uint64_t *fast_ud,
                  struct ur_posted *posted,
                  unsigned nbatches, uint64_t *user_data, int32_t *res,
                  uint32_t *clean_k, int32_t *clean_res, unsigned max,
                  unsigned *nclean, int32_t *clean_runs, unsigned *nruns,
                  unsigned *nposted);
int ur_reap_box(struct ur_ring *ring, struct ur_inbox *inbox);
unsigned ur_posted_missing(const int32_t *posted, unsigned width, const uint32_t *ks,
                           unsigned n);
void ur_posted_column(const int32_t *posted, unsigned width, unsigned j, const uint32_t *ks,
                      unsigned n, int32_t *out);
int ur_cycle(struct ur_ring *ring, struct ur_inbox *inbox, unsigned min_complete,
             int64_t timeout_ns, unsigned in_flight, unsigned watched);
unsigned ur_cq_ready(struct ur_ring *ring);
unsigned ur_sq_space(struct ur_ring *ring);
unsigned ur_sq_flags(struct ur_ring *ring);

/* parameter columns, once per batch */
long ur_string_starts(const char *blob, size_t len, int64_t base,
                      int64_t *starts, long n);
int64_t ur_address(const char *bytes);

/* Restrict a ring created with IORING_SETUP_R_DISABLED to these SQE
 * opcodes and flags (and the register opcodes the ring layer itself uses), then
 * enable it.  0 or -errno. */
int ur_restrict(struct ur_ring *ring, const uint8_t *sqe_ops, unsigned nops, uint8_t sqe_flags);

/* openat2(2), which libc does not wrap: the blocking equivalent of
 * IORING_OP_OPENAT2 (the thread engine, userspace steps) */
int ur_openat2(int dirfd, const char *path, uint64_t flags, uint64_t mode, uint64_t resolve);
