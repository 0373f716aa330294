/* SPDX-License-Identifier: MIT */

#include "event-util.h"

int event_source_arm_relative(sd_event_source *s, uint64_t usec) {
        int r;

        r = sd_event_source_set_time_relative(s, usec);
        if (r < 0)
                return r;
        return sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
}

int event_reset_time_relative(sd_event *e, sd_event_source **s, clockid_t clock, uint64_t usec, uint64_t accuracy,
                              sd_event_time_handler_t callback, void *userdata, const char *description) {
        int r;

        if (*s)
                return event_source_arm_relative(*s, usec);

        r = sd_event_add_time_relative(e, s, clock, usec, accuracy, callback, userdata);
        if (r < 0)
                return r;
        if (description)
                (void) sd_event_source_set_description(*s, description);
        return 0;
}
