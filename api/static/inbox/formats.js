/* JSON Schema `format` checks of the inbox form, with the server's messages (taskexec/contract/validation.py).
   The table between the markers is JSON; tests/unit/test_formats.py checks it equals FORMAT_MESSAGES.
   Checks follow jsonschema's format checker; formats without a check here are left to the server,
   whose answer (same wording) is shown next to the field. */
(function () {
  "use strict";
  const MESSAGES = /* format-messages */ {
    "email": "must be an email address",
    "idn-email": "must be an email address",
    "date": "must be a date (YYYY-MM-DD)",
    "date-time": "must be a date and time with a UTC offset (RFC 3339, e.g. 2024-05-01T09:30:00Z)",
    "time": "must be a time with a UTC offset (e.g. 09:30:00Z)",
    "uri": "must be an absolute URI (e.g. https://example.com/x)",
    "uri-reference": "must be a URI reference",
    "uuid": "must be a UUID",
    "ipv4": "must be an IPv4 address",
    "ipv6": "must be an IPv6 address",
    "hostname": "must be a host name",
    "duration": "must be an ISO 8601 duration (e.g. P3D)"
  } /* end-format-messages */;

  function validDate(y, m, d) {
    const dt = new Date(Date.UTC(y, m - 1, d));
    return dt.getUTCFullYear() === y && dt.getUTCMonth() === m - 1 && dt.getUTCDate() === d;
  }

  function date(v) {
    const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(v);
    return !!m && validDate(+m[1], +m[2], +m[3]);
  }

  function time(v) {
    const m = /^(\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-](\d{2}):(\d{2}))$/.exec(v);
    return !!m && +m[1] < 24 && +m[2] < 60 && +m[3] < 61 && (m[6] === undefined || (+m[6] < 24 && +m[7] < 60));
  }

  const CHECKS = {
    email: (v) => v.includes("@"),
    "idn-email": (v) => v.includes("@"),
    date,
    "date-time": (v) => {
      const i = v.search(/[Tt]/);
      return i === 10 && date(v.slice(0, 10)) && time(v.slice(11));
    },
    time,
    uri: (v) => /^[A-Za-z][A-Za-z0-9+.-]*:[^\s<>"{}|\\^`]*$/.test(v),
    uuid: (v) => /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/.test(v),
    ipv4: (v) => /^((25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)$/.test(v),
  };

  function message(format) { return MESSAGES[format] || "must be a valid " + format; }

  /* The server's message when `value` fails `format`, null when it passes or is not checked here. */
  function check(format, value) {
    const fn = CHECKS[format];
    if (!fn || typeof value !== "string") return null;
    return fn(value) ? null : message(format);
  }

  window.TaskexecFormats = { check, message, checked: Object.keys(CHECKS) };
})();
