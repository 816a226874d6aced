"""Strings of other packages' pages that their own catalogues leave in English, marked here only
so that ``makemessages`` (``scripts/messages``) puts them in our catalogues in ``locale/``.

Django looks a message up in every catalogue it loads, ours (``LOCALE_PATHS``) first, whatever
the code that asks for it: translating these exact msgids in ``locale/`` translates them where
the other package shows them. Nothing imports this module; each string is copied verbatim
(a changed character would be another msgid) from:

- django-axes (the login lock-out lists in the admin), which ships no Korean or Chinese
  catalogue; its app's name is ours to give (``chatsite.apps.AxesConfig``). "Yes" and "No" of
  its filter are Django's own, already translated.
- Django 5.2's admin and auth, whose Simplified Chinese catalogues lack these few. The admin's
  JavaScript strings missing there are marked the same way in ``chatsite/third_party_strings.js``.

When one of those packages is upgraded, compare the msgids with its source again.
"""

from django.utils.translation import gettext_noop, ngettext_lazy

AXES = [
    # axes/models.py
    gettext_noop("User Agent"),
    gettext_noop("IP Address"),
    gettext_noop("Username"),
    gettext_noop("HTTP Accept"),
    gettext_noop("Path"),
    gettext_noop("Attempt Time"),
    gettext_noop("Access lock out"),
    gettext_noop("access failure"),
    gettext_noop("access failures"),
    gettext_noop("GET Data"),
    gettext_noop("POST Data"),
    gettext_noop("Failed Logins"),
    gettext_noop("access attempt"),
    gettext_noop("access attempts"),
    gettext_noop("Access Attempt"),
    gettext_noop("Expires At"),
    gettext_noop("The time when access attempt expires and is no longer valid."),
    gettext_noop("access attempt expiration"),
    gettext_noop("access attempt expirations"),
    gettext_noop("Logout Time"),
    gettext_noop("Session key hash (sha256)"),
    gettext_noop("access log"),
    gettext_noop("access logs"),
    # axes/admin.py
    gettext_noop("Locked Out"),
    gettext_noop("Form Data"),
    gettext_noop("Meta Data"),
    gettext_noop("Clean up expired attempts"),
    gettext_noop("Not set"),
    gettext_noop("Attempt Remaining"),
    # axes/conf.py
    gettext_noop("Account locked: too many login attempts. Please try again later."),
    gettext_noop("Account locked: too many login attempts. Contact an admin to unlock your "
                 "account."),
]

DJANGO_ADMIN = [
    # django/contrib/admin/templates/admin/app_list.html
    gettext_noop("Model name"),
    gettext_noop("Add link"),
    gettext_noop("Change or view list link"),
    # django/contrib/admin/templates/admin/auth/user/add_form.html
    gettext_noop("After you’ve created a user, you’ll be able to edit more user options."),
    # django/contrib/admin/templates/admin/auth/user/change_password.html
    gettext_noop("Error:"),
    # django/contrib/admin/templates/admin/login.html
    gettext_noop("Forgotten your login credentials?"),
    # django/contrib/admin/templates/registration/password_reset_email.html
    gettext_noop("In case you’ve forgotten, you are:"),
]

DJANGO_AUTH = [
    # django/contrib/auth/password_validation.py (MinimumLengthValidator)
    ngettext_lazy("This password is too short. It must contain at least %d character.",
                  "This password is too short. It must contain at least %d characters."),
]
