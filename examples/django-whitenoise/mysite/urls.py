import sys

from django.http import HttpResponse
from django.templatetags.static import static
from django.urls import path


def index(request):
    # static() raises under the manifest storage unless collectstatic ran.
    return HttpResponse(
        f"Hello from Django on Python {sys.version.split()[0]}; css at {static('site.css')}\n",
        content_type="text/plain",
    )


urlpatterns = [path("", index)]
