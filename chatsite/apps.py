"""Other packages' apps, as this site names them."""

from axes.apps import AppConfig as AxesAppConfig
from django.utils.translation import gettext_lazy as _


class AxesConfig(AxesAppConfig):
    """django-axes (the login lock-out), whose own app has no translatable name: the admin
    showed "Axes" in every language."""

    verbose_name = _("Login lock-out")
