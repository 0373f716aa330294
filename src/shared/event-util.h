/* SPDX-License-Identifier: MIT */
#pragma once

#include <systemd/sd-event.h>

/* Arms the one-shot timer s to fire usec from now on its own clock. 0 or a negative errno. */
int event_source_arm_relative(sd_event_source *s, uint64_t usec);

/* As systemd's event_reset_time_relative(): arms *s usec from now, creating it (with accuracy, callback and
 * description) on first use. 0 or a negative errno. */
int event_reset_time_relative(sd_event *e, sd_event_source **s, clockid_t clock, uint64_t usec, uint64_t accuracy,
                              sd_event_time_handler_t callback, void *userdata, const char *description);
