"""The Flask extension objects, created unbound so that any module may import them."""

from flask_migrate import Migrate
from flask_sock import Sock
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    pass


# Objects keep their loaded values after commit: a handler's result is dumped right
# after the dispatcher commits, and expiring it would cost a SELECT per command to
# read back what we just wrote. The session ends with the request anyway.
db = SQLAlchemy(model_class=Base, session_options={"expire_on_commit": False})
migrate = Migrate()
sock = Sock()
