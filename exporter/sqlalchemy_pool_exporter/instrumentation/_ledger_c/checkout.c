/* Checkout: pool.connect(), the compiled twin of the connect wrapper in acquire.py. */
#include "ledger.h"

typedef struct {
    PyObject_HEAD
    Ledger *ledger;
    PyObject *checkout;    /* called with target: what pool.connect() would call */
    PyObject *target;
    PyObject *finder;      /* sites.SiteFinder, or None: no checkout sites */
    PyObject *getframe;    /* sys._getframe */
    PyObject *wait_failed; /* acquire._wait_failed(stats, start, exc, reporter) */
    PyObject *reporter;
    int reentrant;         /* a SingletonThreadPool: the same proxy may come back */
    Slot counter;          /* _ConnectionFairy._counter */
    Slot last;             /* SiteFinder.last */
    PyObject *dict;
    vectorcallfunc vectorcall;
} Checkout;

/* The checkout site as (code, lasti) in *code and *lasti (new references); -1 on error.
 * Mirrors the Python connect wrapper: the frame where the app was found last time, if it
 * still runs the same code, else SiteFinder.locate(). No frame is kept. */
static int
find_site(Checkout *self, PyObject **code, PyObject **lasti)
{
    PyObject *last = slot_get(&self->last, self->finder, str_last);
    if (last == NULL) {
        return -1;
    }
    if (!PyTuple_CheckExact(last) || PyTuple_GET_SIZE(last) != 2) {
        Py_DECREF(last);
        PyErr_SetString(PyExc_TypeError, "SiteFinder.last is not a (depth, code) pair");
        return -1;
    }
    Py_ssize_t depth = PyLong_AsSsize_t(PyTuple_GET_ITEM(last, 0));
    if (depth == -1 && PyErr_Occurred()) {
        Py_DECREF(last);
        return -1;
    }
    /* Depths count from the Python wrapper's frame; this wrapper has none. */
    PyObject *level = PyLong_FromSsize_t(depth - 1);
    PyObject *frame = level == NULL ? NULL : PyObject_CallOneArg(self->getframe, level);
    Py_XDECREF(level);
    if (frame == NULL) {
        Py_DECREF(last);
        if (!PyErr_ExceptionMatches(PyExc_ValueError)) {
            return -1;
        }
        PyErr_Clear(); /* a shallower stack than last time */
    }
    else {
        PyObject *found = (PyObject *)PyFrame_GetCode((PyFrameObject *)frame);
        int same = found == PyTuple_GET_ITEM(last, 1);
        Py_DECREF(found);
        if (same) {
            *code = PyTuple_GET_ITEM(last, 1);
            Py_INCREF(*code);
            Py_DECREF(last);
#if PY_VERSION_HEX >= 0x030B0000
            *lasti = PyLong_FromLong(PyFrame_GetLasti((PyFrameObject *)frame));
#else
            *lasti = PyObject_GetAttr(frame, str_f_lasti);
#endif
            Py_DECREF(frame);
            if (*lasti == NULL) {
                Py_CLEAR(*code);
                return -1;
            }
            return 0;
        }
        Py_DECREF(frame);
        Py_DECREF(last);
    }
    PyObject *site = PyObject_CallMethodNoArgs(self->finder, str_locate);
    if (site == NULL) {
        return -1;
    }
    if (!PyTuple_Check(site) || PyTuple_GET_SIZE(site) != 2) {
        Py_DECREF(site);
        PyErr_SetString(PyExc_TypeError, "SiteFinder.locate() did not return a pair");
        return -1;
    }
    *code = PyTuple_GET_ITEM(site, 0);
    *lasti = PyTuple_GET_ITEM(site, 1);
    Py_INCREF(*code);
    Py_INCREF(*lasti);
    Py_DECREF(site);
    return 0;
}

/* pool.connect(): the Python connect wrapper of acquire.py, step by step. */
static PyObject *
Checkout_vectorcall(Checkout *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    if (PyVectorcall_NARGS(nargsf) != 0 || (kwnames != NULL && PyTuple_GET_SIZE(kwnames))) {
        PyErr_SetString(PyExc_TypeError, "connect() takes no arguments");
        return NULL;
    }
    Ledger *ledger = self->ledger;
    if (ledger->stats == NULL) {
        PyErr_SetString(PyExc_TypeError, "Ledger was not initialised");
        return NULL;
    }
    /* A pending caller is its start time in ``waiting`` (see PoolStats.waiting). */
    PyObject *start = clock_reading(ledger);
    if (start == NULL) {
        return NULL;
    }
    if (PyList_Append(ledger->waiting, start) < 0) {
        Py_DECREF(start);
        return NULL;
    }
    PyObject *fairy = PyObject_CallOneArg(self->checkout, self->target);
    if (fairy == NULL) {
        PyObject *type, *value, *traceback;
        PyErr_Fetch(&type, &value, &traceback);
        PyErr_NormalizeException(&type, &value, &traceback);
        if (traceback != NULL && value != NULL) {
            PyException_SetTraceback(value, traceback);
        }
        PyObject *result = PyObject_CallFunctionObjArgs(
            self->wait_failed, ledger->stats, start, value ? value : Py_None, self->reporter,
            NULL);
        Py_DECREF(start);
        if (result == NULL) { /* as in Python: its own error replaces the app's */
            Py_XDECREF(type);
            Py_XDECREF(value);
            Py_XDECREF(traceback);
            return NULL;
        }
        Py_DECREF(result);
        PyErr_Restore(type, value, traceback);
        return NULL;
    }
    PyObject *now = clock_reading(ledger);
    PyObject *code = NULL, *lasti = NULL;
    if (now == NULL) {
        goto failed;
    }
    if (self->reentrant) {
        PyObject *counter = slot_get(&self->counter, fairy, str_counter);
        if (counter == NULL) {
            goto site_failed;
        }
        int again = PyObject_RichCompareBool(counter, one, Py_NE);
        Py_DECREF(counter);
        if (again < 0) {
            goto site_failed;
        }
        if (again) {
            /* A re-entrant checkout hands back a proxy that is already checked out:
             * not a new checkout. */
            if (remove_waiting(ledger, start) < 0) {
                goto site_failed;
            }
            Py_DECREF(start);
            Py_DECREF(now);
            return fairy;
        }
    }
    if (self->finder != Py_None && find_site(self, &code, &lasti) < 0) {
        goto site_failed;
    }
    goto book;
site_failed:
    if (report(self->reporter, str_checkout) < 0) {
        goto failed;
    }
book:
    if (code == NULL) {
        code = Py_None;
        Py_INCREF(code);
        lasti = PyLong_FromLong(0);
        if (lasti == NULL) {
            goto failed;
        }
    }
    /* Ends the pending wait, observes it, holds the record, raises the peak. */
    if (checked_out(ledger, fairy, start, now, code, lasti) < 0 &&
        report(self->reporter, str_checkout) < 0) {
        goto failed;
    }
    Py_DECREF(start);
    Py_DECREF(now);
    Py_DECREF(code);
    Py_DECREF(lasti);
    return fairy;
failed: /* an error that must reach the app (not an Exception): the proxy goes too */
    Py_DECREF(fairy);
    Py_DECREF(start);
    Py_XDECREF(now);
    Py_XDECREF(code);
    Py_XDECREF(lasti);
    return NULL;
}

static PyObject *
Checkout_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PyObject *ledger, *checkout, *target, *finder, *getframe, *wait_failed, *reporter;
    int reentrant;
    static char *kwlist[] = {"ledger",      "checkout", "target",    "finder", "getframe",
                             "wait_failed", "reporter", "reentrant", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!OOOOOOp:Checkout", kwlist, &LedgerType,
                                     &ledger, &checkout, &target, &finder, &getframe,
                                     &wait_failed, &reporter, &reentrant)) {
        return NULL;
    }
    Checkout *self = (Checkout *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    Py_INCREF(ledger);
    self->ledger = (Ledger *)ledger;
    Py_INCREF(checkout);
    self->checkout = checkout;
    Py_INCREF(target);
    self->target = target;
    Py_INCREF(finder);
    self->finder = finder;
    Py_INCREF(getframe);
    self->getframe = getframe;
    Py_INCREF(wait_failed);
    self->wait_failed = wait_failed;
    Py_INCREF(reporter);
    self->reporter = reporter;
    self->reentrant = reentrant;
    self->vectorcall = (vectorcallfunc)Checkout_vectorcall;
    return (PyObject *)self;
}

static int
Checkout_traverse(Checkout *self, visitproc visit, void *arg)
{
    Py_VISIT(self->ledger);
    Py_VISIT(self->checkout);
    Py_VISIT(self->target);
    Py_VISIT(self->finder);
    Py_VISIT(self->getframe);
    Py_VISIT(self->wait_failed);
    Py_VISIT(self->reporter);
    Py_VISIT(self->counter.type);
    Py_VISIT(self->last.type);
    Py_VISIT(self->dict);
    return 0;
}

static int
Checkout_clear(Checkout *self)
{
    Py_CLEAR(self->ledger);
    Py_CLEAR(self->checkout);
    Py_CLEAR(self->target);
    Py_CLEAR(self->finder);
    Py_CLEAR(self->getframe);
    Py_CLEAR(self->wait_failed);
    Py_CLEAR(self->reporter);
    Py_CLEAR(self->counter.type);
    Py_CLEAR(self->last.type);
    Py_CLEAR(self->dict);
    return 0;
}

static void
Checkout_dealloc(Checkout *self)
{
    PyObject_GC_UnTrack(self);
    Checkout_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMemberDef Checkout_members[] = {
    {"checkout", T_OBJECT, offsetof(Checkout, checkout), READONLY, "Called with target."},
    {"target", T_OBJECT, offsetof(Checkout, target), READONLY, "What checkout is called with."},
    {NULL, 0, 0, 0, NULL},
};

PyTypeObject CheckoutType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "sqlalchemy_pool_exporter.instrumentation._ledger.Checkout",
    .tp_basicsize = sizeof(Checkout),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "pool.connect(): times the checkout, finds its site, books it in the ledger.",
    .tp_new = Checkout_new,
    .tp_traverse = (traverseproc)Checkout_traverse,
    .tp_clear = (inquiry)Checkout_clear,
    .tp_dealloc = (destructor)Checkout_dealloc,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(Checkout, vectorcall),
    .tp_dictoffset = offsetof(Checkout, dict),
    .tp_members = Checkout_members,
    .tp_getattro = PyObject_GenericGetAttr,
    .tp_setattro = PyObject_GenericSetAttr,
};
