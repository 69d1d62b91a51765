/* One histogram observation: the bucket bisect.bisect_left picks, and the sum. */
#include "ledger.h"

int
hist_init(Hist *h, PyObject *hist)
{
    if ((h->bounds = PyObject_GetAttr(hist, str_bounds)) == NULL ||
        (h->counts = PyObject_GetAttr(hist, str_counts)) == NULL) {
        return -1;
    }
    if (!PyTuple_CheckExact(h->bounds) || PyTuple_GET_SIZE(h->bounds) == 0 ||
        !PyList_CheckExact(h->counts) ||
        PyList_GET_SIZE(h->counts) != PyTuple_GET_SIZE(h->bounds) + 1) {
        PyErr_SetString(PyExc_TypeError,
                        "histogram needs a tuple of bounds and a list of len(bounds) + 1 counts");
        return -1;
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(h->bounds); i++) {
        if (!PyFloat_CheckExact(PyTuple_GET_ITEM(h->bounds, i))) {
            PyErr_SetString(PyExc_TypeError, "histogram bounds must be floats");
            return -1;
        }
    }
    h->first = PyFloat_AS_DOUBLE(PyTuple_GET_ITEM(h->bounds, 0));
    Py_INCREF(hist);
    h->hist = hist;
    return 0;
}

/* One observation: the bucket bisect.bisect_left picks (the first bound >= value), + sum. */
int
observe(Hist *h, double value)
{
    Py_ssize_t lo = 0;
    if (!(value <= h->first)) {
        Py_ssize_t hi = PyTuple_GET_SIZE(h->bounds);
        while (lo < hi) {
            Py_ssize_t mid = (lo + hi) / 2;
            if (PyFloat_AS_DOUBLE(PyTuple_GET_ITEM(h->bounds, mid)) < value) {
                lo = mid + 1;
            }
            else {
                hi = mid;
            }
        }
    }
    if (lo >= PyList_GET_SIZE(h->counts)) { /* the list was shortened behind our back */
        PyErr_SetString(PyExc_IndexError, "histogram counts shorter than its bounds");
        return -1;
    }
    PyObject *count = PyNumber_Add(PyList_GET_ITEM(h->counts, lo), one);
    if (count == NULL) {
        return -1;
    }
    PyList_SetItem(h->counts, lo, count); /* steals count, releases the old one */
    PyObject *sum = slot_get(&h->sum, h->hist, str_sum);
    if (sum == NULL) {
        return -1;
    }
    double total = PyFloat_AsDouble(sum);
    Py_DECREF(sum);
    if (total == -1.0 && PyErr_Occurred()) {
        return -1;
    }
    sum = PyFloat_FromDouble(total + value);
    if (sum == NULL) {
        return -1;
    }
    int rc = slot_set(&h->sum, h->hist, str_sum, sum);
    Py_DECREF(sum);
    return rc;
}

int
hist_traverse(Hist *h, visitproc visit, void *arg)
{
    Py_VISIT(h->sum.type);
    Py_VISIT(h->hist);
    Py_VISIT(h->bounds);
    Py_VISIT(h->counts);
    return 0;
}

void
hist_clear(Hist *h)
{
    Py_CLEAR(h->sum.type);
    Py_CLEAR(h->hist);
    Py_CLEAR(h->bounds);
    Py_CLEAR(h->counts);
}
