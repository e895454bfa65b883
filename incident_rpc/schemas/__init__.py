"""The marshmallow schemas of every dialect: parameters in, answers out."""
