/* SPDX-License-Identifier: MIT */
#pragma once

/* Intrusive doubly linked lists, as systemd's list.h: the item carries name##_next/name##_prev. */

#include <assert.h>

#define LIST_HEAD(t, name) t *name
#define LIST_FIELDS(t, name) t *name##_next, *name##_prev

#define LIST_PREPEND(name, head, item)                                  \
        do {                                                            \
                __typeof__(*(head)) **_head = &(head), *_item = (item); \
                if ((_item->name##_next = *_head))                      \
                        _item->name##_next->name##_prev = _item;        \
                _item->name##_prev = NULL;                              \
                *_head = _item;                                         \
        } while (false)

#define LIST_REMOVE(name, head, item)                                   \
        do {                                                            \
                __typeof__(*(head)) **_head = &(head), *_item = (item); \
                if (_item->name##_next)                                 \
                        _item->name##_next->name##_prev = _item->name##_prev; \
                if (_item->name##_prev)                                 \
                        _item->name##_prev->name##_next = _item->name##_next; \
                else {                                                  \
                        assert(*_head == _item);                        \
                        *_head = _item->name##_next;                    \
                }                                                       \
                _item->name##_next = _item->name##_prev = NULL;         \
        } while (false)

#define LIST_FOREACH(name, i, head) for (__typeof__(*(head)) *i = (head); i; i = i->name##_next)

/* Safe against removal of the current item. */
#define LIST_FOREACH_SAFE(name, i, n, head)                                             \
        for (__typeof__(*(head)) *n, *i = (head); i && ((n = i->name##_next), 1); i = n)
