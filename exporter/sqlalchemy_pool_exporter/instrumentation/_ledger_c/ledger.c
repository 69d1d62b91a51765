/* The Ledger type: what a checkout (checked_out) and a checkin (checked_in) book. */
#include "ledger.h"

/* owner.<name> += 1 */
static int
increment(Slot *slot, PyObject *owner, PyObject *name)
{
    PyObject *value = slot_get(slot, owner, name);
    if (value == NULL) {
        return -1;
    }
    PyObject *more = PyNumber_Add(value, one);
    Py_DECREF(value);
    if (more == NULL) {
        return -1;
    }
    int rc = slot_set(slot, owner, name, more);
    Py_DECREF(more);
    return rc;
}

/* dict.pop(key, None) as a new reference, or NULL with an error set, or NULL if absent. */
static PyObject *
pop(PyObject *dict, PyObject *key)
{
    PyObject *value = PyDict_GetItemWithError(dict, key);
    if (value == NULL) {
        return NULL;
    }
    Py_INCREF(value);
    if (PyDict_DelItem(dict, key) < 0) {
        Py_DECREF(value);
        return NULL;
    }
    return value;
}

static int
Ledger_init(Ledger *self, PyObject *args, PyObject *kwds)
{
    PyObject *stats, *clock, *wait = NULL, *use = NULL;
    static char *kwlist[] = {"stats", "clock", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO:Ledger", kwlist, &stats, &clock)) {
        return -1;
    }
    if (self->stats != NULL) {
        PyErr_SetString(PyExc_TypeError, "Ledger is initialised once");
        return -1;
    }
    Py_INCREF(stats);
    self->stats = stats;
    Py_INCREF(clock);
    self->clock = clock;
    double probe;
    self->native_clock = clock == perf_counter && native_seconds(&probe);
    if ((self->held = PyObject_GetAttr(stats, str_held)) == NULL ||
        (self->waiting = PyObject_GetAttr(stats, str_waiting)) == NULL ||
        (self->leaked = PyObject_GetAttr(stats, str_leaked)) == NULL) {
        return -1;
    }
    if (!PyDict_CheckExact(self->held) || !PyDict_CheckExact(self->leaked) ||
        !PyList_CheckExact(self->waiting)) {
        PyErr_SetString(PyExc_TypeError, "stats.held and stats.leaked must be dicts, "
                                         "stats.waiting a list");
        return -1;
    }
    int rc = -1;
    if ((wait = PyObject_GetAttr(stats, str_wait)) != NULL &&
        (use = PyObject_GetAttr(stats, str_use)) != NULL && hist_init(&self->wait, wait) == 0 &&
        hist_init(&self->use, use) == 0) {
        rc = 0;
    }
    Py_XDECREF(wait);
    Py_XDECREF(use);
    return rc;
}

/* waiting.remove(start): the first equal value, as list.remove does. */
int
remove_waiting(Ledger *self, PyObject *start)
{
    PyObject *waiting = self->waiting;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(waiting); i++) {
        PyObject *item = PyList_GET_ITEM(waiting, i);
        int equal = item == start;
        if (!equal) {
            Py_INCREF(item);
            equal = PyObject_RichCompareBool(item, start, Py_EQ);
            Py_DECREF(item);
            if (equal < 0) {
                return -1;
            }
        }
        if (equal) {
            return PyList_SetSlice(waiting, i, i + 1, NULL);
        }
    }
    PyErr_SetString(PyExc_ValueError, "list.remove(x): x not in list");
    return -1;
}

/* Book a checkout; 0, or -1 with an error set. */
int
checked_out(Ledger *self, PyObject *fairy, PyObject *start, PyObject *now, PyObject *code,
            PyObject *lasti)
{
    if (remove_waiting(self, start) < 0) {
        return -1;
    }
    double begun = PyFloat_AsDouble(start);
    if (begun == -1.0 && PyErr_Occurred()) {
        return -1;
    }
    double got = PyFloat_AsDouble(now);
    if (got == -1.0 && PyErr_Occurred()) {
        return -1;
    }
    PyObject *rec = slot_get(&self->connection_record, fairy, str_connection_record);
    if (rec == NULL) {
        return -1;
    }
    PyObject *entry = NULL;
    PyObject *ident = NULL;
    PyObject *ref = NULL;
    int rc = -1;
    if (observe(&self->wait, got - begun) < 0) {
        goto done;
    }
    ref = slot_get(&self->fairy_ref, rec, str_fairy_ref);
    ident = PyLong_FromUnsignedLong(PyThread_get_thread_ident());
    if (ref == NULL || ident == NULL) {
        goto done;
    }
    entry = PyTuple_Pack(5, now, code, lasti, ident, ref);
    if (entry == NULL || PyDict_SetItem(self->held, rec, entry) < 0) {
        goto done;
    }
    PyObject *peak = slot_get(&self->peak, self->stats, str_peak);
    if (peak == NULL) {
        goto done;
    }
    Py_ssize_t highest = PyLong_AsSsize_t(peak);
    Py_DECREF(peak);
    if (highest == -1 && PyErr_Occurred()) {
        goto done;
    }
    Py_ssize_t size = PyDict_GET_SIZE(self->held);
    rc = 0;
    if (size > highest) {
        PyObject *value = PyLong_FromSsize_t(size);
        rc = value == NULL ? -1 : slot_set(&self->peak, self->stats, str_peak, value);
        Py_XDECREF(value);
    }
done:
    Py_DECREF(rec);
    Py_XDECREF(ref);
    Py_XDECREF(ident);
    Py_XDECREF(entry);
    return rc;
}

static PyObject *
Ledger_checked_out(Ledger *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError,
                        "checked_out(fairy, start, now, code, lasti) takes 5 arguments");
        return NULL;
    }
    if (self->stats == NULL) {
        PyErr_SetString(PyExc_TypeError, "Ledger was not initialised");
        return NULL;
    }
    if (checked_out(self, args[0], args[1], args[2], args[3], args[4]) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* End of the checkout of ``rec`` in the stats; 0, or -1 with an error set. */
int
checked_in(Ledger *self, PyObject *rec)
{
    if (self->stats == NULL) {
        PyErr_SetString(PyExc_TypeError, "Ledger was not initialised");
        return -1;
    }
    PyObject *entry = pop(self->held, rec);
    if (entry == NULL) {
        return PyErr_Occurred() ? -1 : 0;
    }
    PyObject *now = NULL, *age = NULL, *proxy = NULL, *flagged = NULL;
    int rc = -1;
    if (!PyTuple_CheckExact(entry) || PyTuple_GET_SIZE(entry) < 5) {
        PyErr_SetString(PyExc_TypeError, "held entry is not a 5-tuple");
        goto done;
    }
    double seconds, taken = 0.0;
    PyObject *since = PyTuple_GET_ITEM(entry, 0);
    if (self->native_clock && PyFloat_CheckExact(since) && native_seconds(&taken)) {
        seconds = taken - PyFloat_AS_DOUBLE(since); /* as the float subtraction does */
    }
    else {
        now = PyObject_CallNoArgs(self->clock);
        if (now == NULL) {
            goto done;
        }
        age = PyNumber_Subtract(now, since);
        if (age == NULL) {
            goto done;
        }
        seconds = PyFloat_AsDouble(age);
        if (seconds == -1.0 && PyErr_Occurred()) {
            goto done;
        }
    }
    if (observe(&self->use, seconds) < 0) {
        goto done;
    }
    /* The proxy is gone: the garbage collector is returning what the app forgot. */
    proxy = PyObject_CallNoArgs(PyTuple_GET_ITEM(entry, 4));
    if (proxy == NULL) {
        goto done;
    }
    int reclaimed = proxy == Py_None;
    Py_CLEAR(proxy); /* never hold the app's connection longer than this check */
    if (reclaimed && increment(&self->gc_reclaimed, self->stats, str_gc_reclaimed) < 0) {
        goto done;
    }
    if (PyDict_GET_SIZE(self->leaked) > 0) {
        flagged = pop(self->leaked, rec);
        if (flagged == NULL && PyErr_Occurred()) {
            goto done;
        }
        if (flagged == entry) {
            if (age == NULL && (age = PyFloat_FromDouble(seconds)) == NULL) {
                goto done;
            }
            PyObject *result = PyObject_CallMethodObjArgs(
                self->stats, str_leak_returned, entry, age, reclaimed ? Py_True : Py_False,
                NULL);
            if (result == NULL) {
                goto done;
            }
            Py_DECREF(result);
        }
    }
    rc = 0;
done:
    Py_DECREF(entry);
    Py_XDECREF(now);
    Py_XDECREF(age);
    Py_XDECREF(flagged);
    return rc;
}

static int
Ledger_traverse(Ledger *self, visitproc visit, void *arg)
{
    Py_VISIT(self->stats);
    Py_VISIT(self->clock);
    Py_VISIT(self->held);
    Py_VISIT(self->waiting);
    Py_VISIT(self->leaked);
    hist_traverse(&self->wait, visit, arg);
    hist_traverse(&self->use, visit, arg);
    Py_VISIT(self->peak.type);
    Py_VISIT(self->gc_reclaimed.type);
    Py_VISIT(self->connection_record.type);
    Py_VISIT(self->fairy_ref.type);
    return 0;
}

static int
Ledger_clear(Ledger *self)
{
    Py_CLEAR(self->stats);
    Py_CLEAR(self->clock);
    Py_CLEAR(self->held);
    Py_CLEAR(self->waiting);
    Py_CLEAR(self->leaked);
    hist_clear(&self->wait);
    hist_clear(&self->use);
    Py_CLEAR(self->peak.type);
    Py_CLEAR(self->gc_reclaimed.type);
    Py_CLEAR(self->connection_record.type);
    Py_CLEAR(self->fairy_ref.type);
    return 0;
}

static void
Ledger_dealloc(Ledger *self)
{
    PyObject_GC_UnTrack(self);
    Ledger_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef Ledger_methods[] = {
    {"checked_out", (PyCFunction)(void (*)(void))Ledger_checked_out, METH_FASTCALL,
     "Book a checkout: its wait, its held entry and the peak."},
    {NULL, NULL, 0, NULL},
};

PyTypeObject LedgerType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "sqlalchemy_pool_exporter.instrumentation._ledger.Ledger",
    .tp_basicsize = sizeof(Ledger),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "What a checkout and a checkin write into one pool's PoolStats.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Ledger_init,
    .tp_traverse = (traverseproc)Ledger_traverse,
    .tp_clear = (inquiry)Ledger_clear,
    .tp_dealloc = (destructor)Ledger_dealloc,
    .tp_methods = Ledger_methods,
};
