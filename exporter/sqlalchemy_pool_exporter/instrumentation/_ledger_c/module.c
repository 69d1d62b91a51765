/* The module: its interned names and types. */
#include "ledger.h"

PyObject *str_connection_record, *str_fairy_ref, *str_sum, *str_peak, *str_gc_reclaimed;
PyObject *str_leak_returned, *str_report, *str_checkin, *str_checkout, *str_held;
PyObject *str_waiting;
PyObject *str_leaked, *str_wait, *str_use, *str_bounds, *str_counts;
PyObject *str_counter, *str_last, *str_locate, *str_f_lasti;
PyObject *one; /* the int 1 */
PyObject *perf_counter; /* time.perf_counter */

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "sqlalchemy_pool_exporter.instrumentation._ledger",
    .m_doc = "Compiled twin of sqlalchemy_pool_exporter.instrumentation.ledger.",
    .m_size = -1,
};

#define INTERN(var, text)                                 \
    if ((var = PyUnicode_InternFromString(text)) == NULL) \
    return NULL

PyMODINIT_FUNC
PyInit__ledger(void)
{
    INTERN(str_connection_record, "_connection_record");
    INTERN(str_fairy_ref, "fairy_ref");
    INTERN(str_sum, "sum");
    INTERN(str_peak, "peak");
    INTERN(str_gc_reclaimed, "gc_reclaimed");
    INTERN(str_leak_returned, "leak_returned");
    INTERN(str_report, "report");
    INTERN(str_checkin, "checkin");
    INTERN(str_checkout, "checkout");
    INTERN(str_held, "held");
    INTERN(str_waiting, "waiting");
    INTERN(str_leaked, "leaked");
    INTERN(str_wait, "wait");
    INTERN(str_use, "use");
    INTERN(str_bounds, "bounds");
    INTERN(str_counts, "counts");
    PyObject *time_module = PyImport_ImportModule("time");
    if (time_module == NULL) {
        return NULL;
    }
    perf_counter = PyObject_GetAttrString(time_module, "perf_counter");
    Py_DECREF(time_module);
    if (perf_counter == NULL) {
        return NULL;
    }
    INTERN(str_counter, "_counter");
    INTERN(str_last, "last");
    INTERN(str_locate, "locate");
    INTERN(str_f_lasti, "f_lasti");
    if ((one = PyLong_FromLong(1)) == NULL) {
        return NULL;
    }
    if (PyType_Ready(&LedgerType) < 0 || PyType_Ready(&CheckinType) < 0 ||
        PyType_Ready(&CheckoutType) < 0) {
        return NULL;
    }
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) {
        return NULL;
    }
    Py_INCREF(&LedgerType);
    Py_INCREF(&CheckinType);
    Py_INCREF(&CheckoutType);
    if (PyModule_AddObject(m, "Ledger", (PyObject *)&LedgerType) < 0 ||
        PyModule_AddObject(m, "Checkin", (PyObject *)&CheckinType) < 0 ||
        PyModule_AddObject(m, "Checkout", (PyObject *)&CheckoutType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}

