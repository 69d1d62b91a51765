/* Checkin: the checkin wrapper, and how both wrappers report their own errors. */
#include "ledger.h"

typedef struct {
    PyObject_HEAD
    Ledger *ledger;
    PyObject *forward;
    PyObject *reporter;
    PyObject *dict; /* the attributes acquire._install marks a wrapper with */
    vectorcallfunc vectorcall;
} Checkin;

/* Report the error set (an Exception) as acquire's wrappers do; -1 if it must propagate. */
int
report(PyObject *reporter, PyObject *where)
{
    if (!PyErr_ExceptionMatches(PyExc_Exception)) {
        return -1;
    }
    PyObject *type, *value, *traceback;
    PyErr_Fetch(&type, &value, &traceback);
    PyErr_NormalizeException(&type, &value, &traceback);
    if (traceback != NULL && value != NULL) {
        PyException_SetTraceback(value, traceback);
    }
    PyObject *result =
        PyObject_CallMethodObjArgs(reporter, str_report, where, value ? value : Py_None, NULL);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(traceback);
    if (result == NULL) {
        return -1;
    }
    Py_DECREF(result);
    return 0;
}

static PyObject *
Checkin_vectorcall(Checkin *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs != 1 || (kwnames != NULL && PyTuple_GET_SIZE(kwnames) != 0)) {
        PyErr_SetString(PyExc_TypeError, "end of checkout takes one connection record");
        return NULL;
    }
    /* Never let bookkeeping reach the app: report it, as ledger.py does. */
    if (checked_in(self->ledger, args[0]) < 0 && report(self->reporter, str_checkin) < 0) {
        return NULL;
    }
    return PyObject_Vectorcall(self->forward, args, 1, NULL);
}

static PyObject *
Checkin_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PyObject *ledger, *forward, *reporter;
    static char *kwlist[] = {"ledger", "forward", "reporter", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!OO:Checkin", kwlist, &LedgerType, &ledger,
                                     &forward, &reporter)) {
        return NULL;
    }
    Checkin *self = (Checkin *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    Py_INCREF(ledger);
    self->ledger = (Ledger *)ledger;
    Py_INCREF(forward);
    self->forward = forward;
    Py_INCREF(reporter);
    self->reporter = reporter;
    self->vectorcall = (vectorcallfunc)Checkin_vectorcall;
    return (PyObject *)self;
}


static int
Checkin_traverse(Checkin *self, visitproc visit, void *arg)
{
    Py_VISIT(self->ledger);
    Py_VISIT(self->forward);
    Py_VISIT(self->reporter);
    Py_VISIT(self->dict);
    return 0;
}

static int
Checkin_clear(Checkin *self)
{
    Py_CLEAR(self->ledger);
    Py_CLEAR(self->forward);
    Py_CLEAR(self->reporter);
    Py_CLEAR(self->dict);
    return 0;
}

static void
Checkin_dealloc(Checkin *self)
{
    PyObject_GC_UnTrack(self);
    Checkin_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMemberDef Checkin_members[] = {
    {"forward", T_OBJECT, offsetof(Checkin, forward), READONLY, "What the record goes to next."},
    {NULL, 0, 0, 0, NULL},
};

PyTypeObject CheckinType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "sqlalchemy_pool_exporter.instrumentation._ledger.Checkin",
    .tp_basicsize = sizeof(Checkin),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "Ends a checkout in the ledger, then calls ``forward(record)``.",
    .tp_new = Checkin_new,
    .tp_traverse = (traverseproc)Checkin_traverse,
    .tp_clear = (inquiry)Checkin_clear,
    .tp_dealloc = (destructor)Checkin_dealloc,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(Checkin, vectorcall),
    .tp_dictoffset = offsetof(Checkin, dict),
    .tp_members = Checkin_members,
    .tp_getattro = PyObject_GenericGetAttr,
    .tp_setattro = PyObject_GenericSetAttr,
};
