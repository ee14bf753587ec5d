"""The Open Music web app (issue 11): pages a person uses, signed in with their own atproto account.

It sits above ``appview`` and ``payments`` (it may import them and ``openmusic``'s core; nothing
below imports ``web``). Today: sign-in through the user's PDS (``web.oauth``), the session pages.

    from web import WebApp, routes, create_web_app
    web = WebApp(settings)            # await web.start() / web.stop() around serving
    app_routes = [*appview_routes, *routes(web)]
"""

from web.app import WebApp, create_web_app, middleware, routes
from web.settings import WebSettings

__all__ = ["WebApp", "WebSettings", "create_web_app", "middleware", "routes"]
