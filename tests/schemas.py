"""The JSON Schemas of docs/openapi.yaml, for checking replies and webhooks in tests.

docs/openapi.yaml is written in the JSON subset of YAML, so `json` reads it and the
project needs no YAML library. Schemas are validated as JSON Schema 2020-12 (OpenAPI
3.1's dialect); `$ref`s to `#/components/schemas/...` resolve inside the document
through `referencing`, which jsonschema already depends on.

    from schemas import validate
    validate("CallSuccess", response.json)      # raises jsonschema.ValidationError
"""

import functools
import json
import os

import jsonschema
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

OPENAPI_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                            "docs", "openapi.yaml")
DOCUMENT_URI = "urn:callexchange:openapi"


@functools.lru_cache(maxsize=None)
def document():
    """The parsed OpenAPI document (a dict)."""
    with open(OPENAPI_PATH, encoding="utf-8") as handle:
        return json.load(handle)


@functools.lru_cache(maxsize=None)
def _registry():
    resource = Resource.from_contents(document(), default_specification=DRAFT202012)
    return Registry().with_resource(DOCUMENT_URI, resource)


@functools.lru_cache(maxsize=None)
def validator(schema_name):
    """A Draft 2020-12 validator for `#/components/schemas/<schema_name>`."""
    if schema_name not in document()["components"]["schemas"]:
        raise KeyError("no schema %r in docs/openapi.yaml" % schema_name)
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema",
              "$ref": "%s#/components/schemas/%s" % (DOCUMENT_URI, schema_name)}
    return jsonschema.Draft202012Validator(
        schema, registry=_registry(),
        format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


def validate(schema_name, instance):
    """Raise jsonschema.ValidationError unless `instance` matches the named schema;
    return `instance` so calls can be chained."""
    error = jsonschema.exceptions.best_match(validator(schema_name).iter_errors(instance))
    if error is not None:
        raise error
    return instance


def is_valid(schema_name, instance):
    return validator(schema_name).is_valid(instance)


def schema_names():
    return sorted(document()["components"]["schemas"])


def response_validator(path, method, status):
    """A validator for the JSON body documented for `status` of `method` on `path`
    (e.g. "/api/v1/asteriskapi.pl", "post", 403), through its $refs."""
    response = document()["paths"][path][method.lower()]["responses"][str(status)]
    if "$ref" in response:
        pointer = response["$ref"]
    else:
        pointer = "#/paths/%s/%s/responses/%s" % (path.replace("~", "~0").replace("/", "~1"),
                                                  method.lower(), status)
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema",
              "$ref": "%s%s/content/application~1json/schema" % (DOCUMENT_URI, pointer)}
    return jsonschema.Draft202012Validator(
        schema, registry=_registry(),
        format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
