"""Known events: calendars (game launches, tournaments, kick-offs) and the uplift they bring.

- :mod:`.calendar`: parse a calendar file (CSV or YAML) into :class:`~.calendar.Calendar`;
  a directory of such files is the server's calendar set (the chart mounts a ConfigMap there).
- :mod:`.uplift`: per event kind, the demand relative to the pre-event level by step from the
  start, learnt only from events already finished, applied on top of a base forecast.
"""
