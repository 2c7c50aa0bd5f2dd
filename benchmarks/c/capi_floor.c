/*
 * capi_floor.c -- a measurement, not a part of uringlets.
 *
 * DESIGN.md makes the ring layer a cffi extension, so Python builds every
 * Completion and crosses into C through cffi's argument conversion.  This
 * module measures what the same minimal run() would cost if its C could use
 * CPython's C API instead: a Lane holds one program's SQE images, patches and
 * value row on a ring set up by uringlets, and lane.run(path) pushes them,
 * enters the kernel once, reaps the one clean CQE and returns the Completion
 * (tuple layout, notify.Completion.FIELDS) made in C, with the read's bytes.
 * Like benchmarks/floor.py's cffi floor it keeps no books at all: it bounds
 * what a design could reach.  Built by floor.py with gcc and the Python
 * headers, against ring.c.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

#include "ring_compat.h"
#include "ring.h"

typedef struct {
    PyObject_HEAD
    struct ur_ring *ring;
    struct ur_inbox *inbox;
    const void *images;
    unsigned nsqes;
    const struct ur_patch *patches;
    unsigned npatches;
    int64_t *values;   /* the value row: [scratch, slot, path] */
    uint64_t ud;       /* the clean ending's user_data, less the atom */
    const char *out;   /* the read's bytes in scratch, or NULL */
    Py_ssize_t out_size;
    PyTypeObject *completion;
    PyObject *program, *prefix, *ref;
} Lane;

static void set(PyObject *tuple, Py_ssize_t i, PyObject *value)
{
    Py_INCREF(value);
    PyTuple_SET_ITEM(tuple, i, value);
}

static PyObject *lane_run(Lane *self, PyObject *path)
{
    const uint8_t last_clear = IOSQE_IO_LINK | IOSQE_IO_HARDLINK | IOSQE_CQE_SKIP_SUCCESS;
    Py_ssize_t n = PyTuple_GET_SIZE(self->prefix), i;
    PyObject *results, *c;
    int32_t res;

    if (path != Py_None)
        self->values[2] = (int64_t)(intptr_t)PyBytes_AS_STRING(path);
    if (ur_push(self->ring, self->images, 0, self->nsqes, self->patches, self->npatches,
                self->values, 1, 1, last_clear, self->ud, 0) != 1 ||
        ur_cycle(self->ring, self->inbox, 1, -1, 1, 0) != 1 ||
        self->inbox->box[UR_BOX_CLEAN] != 1)
        return PyErr_Format(PyExc_RuntimeError, "capi_floor: not one clean ending");
    res = self->inbox->clean_res[0];
    self->inbox->box[UR_BOX_RUNS_DONE] = self->inbox->box[UR_BOX_RUNS];
    results = PyTuple_New(n + 1);
    if (!results)
        return NULL;
    for (i = 0; i < n; i++)
        set(results, i, PyTuple_GET_ITEM(self->prefix, i));
    PyTuple_SET_ITEM(results, n, PyLong_FromLong(res));
    c = self->completion->tp_alloc(self->completion, 9);
    if (!c) {
        Py_DECREF(results);
        return NULL;
    }
    set(c, 0, Py_None);
    set(c, 1, self->program);
    PyTuple_SET_ITEM(c, 2, results);
    set(c, 3, Py_None);
    set(c, 4, Py_False);
    set(c, 5, Py_None);
    set(c, 6, Py_True);
    set(c, 7, self->out ? self->ref : Py_None);
    if (self->out)
        PyTuple_SET_ITEM(c, 8, PyBytes_FromStringAndSize(self->out, self->out_size));
    else
        set(c, 8, Py_None);
    return c;
}

static void lane_dealloc(Lane *self)
{
    Py_XDECREF(self->completion);
    Py_XDECREF(self->program);
    Py_XDECREF(self->prefix);
    Py_XDECREF(self->ref);
    PyObject_Free(self);
}

static PyMethodDef lane_methods[] = {
    {"run", (PyCFunction)lane_run, METH_O, "run(path or None) -> Completion"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject LaneType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "capi_floor.Lane",
    .tp_basicsize = sizeof(Lane),
    .tp_dealloc = (destructor)lane_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_methods = lane_methods,
};

/* lane(ring, inbox, images, nsqes, patches, npatches, values, ud, out,
 *      out_size, Completion, program, prefix, ref): addresses as ints. */
static PyObject *make_lane(PyObject *module, PyObject *args)
{
    unsigned long long ring, inbox, images, patches, values, ud, out;
    unsigned nsqes, npatches;
    Py_ssize_t out_size;
    PyObject *completion, *program, *prefix, *ref;
    Lane *lane;

    (void)module;
    if (!PyArg_ParseTuple(args, "KKKIKIKKKnOOO!O", &ring, &inbox, &images, &nsqes, &patches,
                          &npatches, &values, &ud, &out, &out_size, &completion, &program,
                          &PyTuple_Type, &prefix, &ref))
        return NULL;
    lane = PyObject_New(Lane, &LaneType);
    if (!lane)
        return NULL;
    lane->ring = (struct ur_ring *)(uintptr_t)ring;
    lane->inbox = (struct ur_inbox *)(uintptr_t)inbox;
    lane->images = (const void *)(uintptr_t)images;
    lane->nsqes = nsqes;
    lane->patches = (const struct ur_patch *)(uintptr_t)patches;
    lane->npatches = npatches;
    lane->values = (int64_t *)(uintptr_t)values;
    lane->ud = ud;
    lane->out = (const char *)(uintptr_t)out;
    lane->out_size = out_size;
    Py_INCREF(completion);
    lane->completion = (PyTypeObject *)completion;
    Py_INCREF(program);
    lane->program = program;
    Py_INCREF(prefix);
    lane->prefix = prefix;
    Py_INCREF(ref);
    lane->ref = ref;
    return (PyObject *)lane;
}

static PyMethodDef methods[] = {
    {"lane", make_lane, METH_VARARGS, "a Lane over a ring set up by uringlets"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "capi_floor", NULL, -1, methods};

PyMODINIT_FUNC PyInit_capi_floor(void)
{
    if (PyType_Ready(&LaneType) < 0)
        return NULL;
    return PyModule_Create(&module);
}
