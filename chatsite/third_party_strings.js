/* Strings of the admin scripts of Django 5.2 that its Simplified Chinese catalogue leaves in English
   (the two lists of a many-to-many selector, admin/js/SelectFilter2.js), marked here only so that
   makemessages -d djangojs (scripts/messages) puts them in locale/*/LC_MESSAGES/djangojs.po.
   The JavaScript catalogue of the admin (/admin/jsi18n/) includes ours (LOCALE_PATHS), so translating
   these exact msgids there translates the selector of the admin.

   This file is never served nor loaded: it is outside static/, and nothing includes it. Copy each
   msgid verbatim from SelectFilter2.js (a changed character would be another msgid); compare them
   again when Django is upgraded. The same for strings of Python code: conversations/third_party_strings.py. */
/* global gettext */
"use strict";

const adminSelectFilterStrings = [  // eslint-disable-line no-unused-vars
    gettext('Choose %s by selecting them and then select the "Choose" arrow button.'),
    gettext("Choose all %s"),
    gettext("Choose selected %s"),
    gettext("Remove selected %s"),
    gettext('Remove %s by selecting them and then select the "Remove" arrow button.'),
    gettext("(click to clear)"),
    gettext("Remove all %s"),
];
