"""What a model accepts, read from its input JSON schema and its catalogue properties.

Workers AI publishes, per model, the JSON schema its `/ai/run` input is validated
against (https://developers.cloudflare.com/workers-ai/models/, "API schema"). The
branches of that schema (prompt, messages, async batch) are merged and read for the
parameters the OpenAI API can ask for: `tools` and the form of one tool, `tool_choice`,
the JSON-mode form (`response_format` with a bare schema, OpenAI's `{name, schema}`
wrapper, or `guided_json`), `stop`, images (a top-level `image` or `image_url` content
parts), `reasoning_effort`, `n` and `logprobs`. The catalogue's `properties`
(`function_calling`, `vision`, `reasoning`) add what a schema cannot say. Nothing here
knows a model by name.
"""
from dataclasses import dataclass, field

MAX_DEPTH = 12


@dataclass(frozen=True)
class Capabilities:
    """The decisions one model's schema allows; `known` is False when it could not be read."""

    known: bool = False
    tools: bool = False
    tool_form: str | None = None  # "openai" ({type, function}) or "flat" ({name, ...})
    tool_description_required: bool = False
    parameter_description_required: bool = False
    parameters_required: bool = False
    tool_choice: bool = False
    parallel_tool_calls: bool = False
    content_nullable: bool = False  # assistant content may be null
    content_parts: bool = False  # message content may be a list of parts
    tool_call_id_pattern: str | None = None
    message_name: bool = False  # message items take a `name` (a tool result's function)
    json_form: str | None = None  # "wrapper", "bare" or "guided_json"
    json_object: bool = False
    stop: bool = False  # native; otherwise the gateway emulates it
    vision: str | None = None  # "image" (top-level) or "parts" (image_url content parts)
    image_string: bool = True  # a top-level image may be a (data URL) string
    reasoning: bool = False
    reasoning_effort: bool = False
    reasoning_efforts: tuple = ()
    n: bool = False
    logprobs: bool = False
    top_logprobs: bool = False
    streaming: bool = True
    properties: dict = field(default_factory=dict, compare=False)

    def summary(self):
        """The booleans `GET /v1/models/{id}` shows under `metadata.capabilities`."""
        return {"tools": self.tools, "json_mode": self.json_form is not None, "stop": True,
                "vision": self.vision is not None, "reasoning": self.reasoning,
                "streaming": self.streaming}


def properties_of(record):
    """The catalogue record's `properties` as a dict (values as Cloudflare sent them)."""
    found = {}
    for prop in (record or {}).get("properties") or []:
        if isinstance(prop, dict) and isinstance(prop.get("property_id"), str):
            found[prop["property_id"]] = prop.get("value")
    return found


def _flag(value):
    """A catalogue property as a boolean, or None when absent ("true", true, "false")."""
    if value is None:
        return None
    return str(value).strip().lower() == "true"


def derive(schema, record=None):
    """The Capabilities of a model with this `{input, output}` schema and catalogue record."""
    props = properties_of(record)
    reasoning_property = _flag(props.get("reasoning")) is True
    if not schema or not isinstance(schema.get("input"), dict):
        return Capabilities(reasoning=reasoning_property, properties=props)
    root = schema["input"]
    fields = chat_fields(root)
    tools = _tools(root, fields.get("tools"))
    messages = _messages(root, fields.get("messages"))
    efforts = _efforts(root, fields.get("reasoning_effort"), props.get("reasoning_effort"))
    vision = _vision(root, fields, messages, _flag(props.get("vision")))
    return Capabilities(
        known=True,
        tools=tools["form"] is not None and _flag(props.get("function_calling")) is not False,
        tool_form=tools["form"],
        tool_description_required=tools["description"],
        parameter_description_required=tools["parameter_description"],
        parameters_required=tools["parameters"],
        tool_choice="tool_choice" in fields,
        parallel_tool_calls="parallel_tool_calls" in fields,
        content_nullable=messages["nullable"],
        content_parts=messages["parts"],
        tool_call_id_pattern=messages["tool_call_id_pattern"],
        message_name=messages["name"],
        json_form=_json_form(root, fields),
        json_object=_json_object(root, fields),
        stop="stop" in fields,
        vision=vision,
        image_string=bool({"string", "any"} & types(root, fields.get("image", []))),
        reasoning=reasoning_property or "reasoning_effort" in fields,
        reasoning_effort="reasoning_effort" in fields,
        reasoning_efforts=efforts,
        n="n" in fields,
        logprobs="logprobs" in fields,
        top_logprobs="top_logprobs" in fields,
        streaming="stream" in fields,
        properties=props,
    )


# -- reading JSON schemas --------------------------------------------------------------------

def resolve(root, node, depth=0):
    """`node` with a local `$ref` ("#/...") followed."""
    while isinstance(node, dict) and isinstance(node.get("$ref"), str) and depth < MAX_DEPTH:
        ref = node["$ref"]
        if not ref.startswith("#"):
            return {}
        target = root
        for part in filter(None, ref[1:].split("/")):
            part = part.replace("~1", "/").replace("~0", "~")
            target = target.get(part) if isinstance(target, dict) else None
        node, depth = target if isinstance(target, dict) else {}, depth + 1
    return node if isinstance(node, dict) else {}


def branches(root, node, depth=0):
    """Every alternative a schema node allows (oneOf / anyOf / allOf flattened)."""
    node = resolve(root, node)
    if depth > MAX_DEPTH:
        return [node]
    found = [node]
    for key in ("oneOf", "anyOf", "allOf"):
        for sub in node.get(key) or []:
            found.extend(branches(root, sub, depth + 1))
    return found


def properties(root, node):
    """name -> [property schemas] over every branch of `node`."""
    merged = {}
    for branch in branches(root, node):
        for name, sub in (branch.get("properties") or {}).items():
            merged.setdefault(name, []).append(sub)
    return merged


def types(root, nodes):
    """The JSON types a property allows ("any" when a branch says nothing)."""
    found = set()
    for node in nodes if isinstance(nodes, list) else [nodes]:
        for branch in branches(root, node):
            kind = branch.get("type")
            if isinstance(kind, str):
                found.add(kind)
            elif isinstance(kind, list):
                found.update(k for k in kind if isinstance(k, str))
            elif "const" in branch or "enum" in branch:
                found.update(_js_type(v) for v in branch.get("enum") or [branch.get("const")])
    return found or {"any"}


def _js_type(value):
    if value is None:
        return "null"
    return {bool: "boolean", int: "integer", float: "number", str: "string",
            list: "array", dict: "object"}.get(type(value), "object")


def chat_fields(root):
    """The top-level input properties of the branches that take `messages` (all if none do)."""
    chat = [b for b in branches(root, root) if "messages" in (b.get("properties") or {})]
    merged = {}
    for branch in chat or branches(root, root):
        for name, sub in (branch.get("properties") or {}).items():
            merged.setdefault(name, []).append(sub)
    return merged


def _items(root, nodes):
    return [resolve(root, b.get("items")) for n in nodes or [] for b in branches(root, n)
            if isinstance(b.get("items"), dict)]


def _required(branch):
    return set(branch.get("required") or [])


def mentions(root, node, key, depth=0):
    """Whether `key` is a property name anywhere inside `node`."""
    if depth > MAX_DEPTH:
        return False
    for branch in branches(root, node):
        props = branch.get("properties") or {}
        if key in props:
            return True
        children = list(props.values()) + [branch.get("items"), branch.get("additionalProperties")]
        if any(isinstance(c, dict) and mentions(root, c, key, depth + 1) for c in children):
            return True
    return False


# -- the decisions ---------------------------------------------------------------------------

def _tools(root, nodes):
    """The tool form the schema takes and which of its fields it insists on."""
    found = {"form": None, "description": False, "parameter_description": False,
             "parameters": False}
    if not nodes:
        return found
    item_branches = [b for item in _items(root, nodes) for b in branches(root, item)]
    openai = [b for b in item_branches if "function" in (b.get("properties") or {})]
    flat = [b for b in item_branches if "name" in (b.get("properties") or {})]
    if openai:
        function = [resolve(root, b["properties"]["function"]) for b in openai]
        chosen, found["form"] = [f for fn in function for f in branches(root, fn)], "openai"
    elif flat:
        chosen, found["form"] = flat, "flat"
    else:
        found["form"] = "openai" if item_branches else None  # untyped items: OpenAI's form
        return found
    found["description"] = any("description" in _required(b) for b in chosen)
    found["parameters"] = any("parameters" in _required(b) for b in chosen)
    for branch in chosen:
        params = (branch.get("properties") or {}).get("parameters")
        for p in branches(root, params) if params else []:
            inner = (p.get("properties") or {}).get("properties")
            for holder in branches(root, inner) if inner else []:
                each = resolve(root, holder.get("additionalProperties"))
                if "description" in _required(each):
                    found["parameter_description"] = True
    return found


def _messages(root, nodes):
    """How message items look: may content be null or parts, is tool_call_id constrained,
    do they take a `name`."""
    found = {"nullable": False, "parts": False, "tool_call_id_pattern": None, "name": False}
    for item in _items(root, nodes):
        for branch in branches(root, item):
            props = branch.get("properties") or {}
            if "content" in props:
                kinds = types(root, props["content"])
                found["nullable"] |= "null" in kinds or "content" not in _required(branch)
                found["parts"] |= bool({"array", "any"} & kinds)
            found["name"] |= "name" in props
            call_id = resolve(root, props.get("tool_call_id"))
            if isinstance(call_id.get("pattern"), str):
                found["tool_call_id_pattern"] = call_id["pattern"]
    return found


def _json_form(root, fields):
    if "response_format" in fields:
        for branch in branches(root, fields["response_format"][0]):
            inner = (branch.get("properties") or {}).get("json_schema")
            if inner is not None and {"schema", "name"} & properties(root, inner).keys():
                return "wrapper"
        return "bare"
    if "guided_json" in fields:
        return "guided_json"
    return None


def _json_object(root, fields):
    """Whether `{"type": "json_object"}` itself is accepted (else a schema stands in for it)."""
    if "response_format" not in fields:
        return False
    kinds = properties(root, fields["response_format"][0]).get("type", [])
    values = set()
    for node in kinds:
        for branch in branches(root, node):
            values.update(branch.get("enum") or [])
            if "const" in branch:
                values.add(branch["const"])
    return not values or "json_object" in values


def _vision(root, fields, messages, vision_property):
    if "image" in fields:
        return "image"
    if "messages" in fields and mentions(root, fields["messages"][0], "image_url"):
        return "parts"
    if vision_property and messages["parts"]:
        return "parts"
    return None


def _efforts(root, nodes, catalogue_value):
    values = []
    for node in nodes or []:
        for branch in branches(root, node):
            values.extend(v for v in branch.get("enum") or [] if isinstance(v, str))
    if not values and isinstance(catalogue_value, dict):
        supported = catalogue_value.get("supported_efforts") or catalogue_value.get("values")
        values = [v for v in supported or [] if isinstance(v, str)]
    return tuple(dict.fromkeys(values))
