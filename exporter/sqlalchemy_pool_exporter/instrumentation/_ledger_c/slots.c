/* Attributes kept in __slots__, read and written at their offsets (see Slot). */
#include "ledger.h"

void
slot_resolve(Slot *slot, PyObject *obj, PyObject *name)
{
    PyTypeObject *type = Py_TYPE(obj);
    /* Held: a type freed and another allocated at its address must not inherit it. */
    Py_INCREF(type);
    Py_XSETREF(slot->type, type);
    slot->offset = 0;
    PyObject *descr = PyObject_GetAttr((PyObject *)type, name);
    if (descr == NULL) {
        PyErr_Clear();
        return;
    }
    if (Py_TYPE(descr) == &PyMemberDescr_Type) {
        PyMemberDef *member = ((PyMemberDescrObject *)descr)->d_member;
        if (member->type == T_OBJECT_EX && !(member->flags & READONLY) && member->offset > 0) {
            slot->offset = member->offset;
        }
    }
    Py_DECREF(descr);
}
