/*
 * cffi_floor.c -- a measurement, not a part of uringlets.
 *
 * The least a cffi (API mode) ring layer can cost per run(): one call with
 * two arguments.  A lane (built by benchmarks/floor.py on a ring set up by
 * uringlets) holds one program's SQE images, patches and value row;
 * lane_run pushes them, enters the kernel once, reaps the one clean CQE and
 * returns its result.  Python then makes what the contract requires of
 * every execution (the Completion, the read's bytes).  It keeps no books:
 * it bounds what a cffi design could reach.
 */
#include <stddef.h>
#include <stdint.h>

#include "ring_compat.h"
#include "ring.h"
#include "cffi_floor.h"

int lane_run(struct lane *lane, const char *path)
{
    const uint8_t last_clear = IOSQE_IO_LINK | IOSQE_IO_HARDLINK | IOSQE_CQE_SKIP_SUCCESS;
    struct ur_inbox *inbox = lane->inbox;

    if (path)
        lane->values[2] = (int64_t)(intptr_t)path;
    if (ur_push(lane->ring, lane->images, 0, lane->nsqes, lane->patches, lane->npatches,
                lane->values, 1, 1, last_clear, lane->ud, 0) != 1 ||
        ur_cycle(lane->ring, inbox, 1, -1, 1, 0) != 1 || inbox->box[UR_BOX_CLEAN] != 1)
        return -1000000; /* not one clean ending: floor.py stops */
    inbox->box[UR_BOX_RUNS_DONE] = inbox->box[UR_BOX_RUNS];
    return inbox->clean_res[0];
}
