"""marshmallow's Schema, without the work it does for fields a request leaves out.

For every declared field marshmallow's `_deserialize` builds a closure, calls
`_call_and_store` and `Field.deserialize`, even when the key is absent and the field has
neither a default nor `required`, which can only ever answer "missing". A chat request
names four or five of the 27 fields of ChatCompletionRequest, so about a third of its
validation time went to the other 22 (micro-benchmark: 71 -> 52 us per load of bench's
request; bench/RESULTS.md).

Here each load only walks the fields the data holds, plus those with a default or
`required`: the result, the errors and their order are marshmallow's own, since a
skipped field would have produced nothing. Unknown-key handling is unchanged (every key
the data holds that is a field is still in the walked set). The full field table is
put back after the load; the loop iterates over its own copy, so a greenlet switch
inside a validator cannot make another load see a reduced table for long, and the
table restored is always the full one taken at construction.
"""
from marshmallow import Schema as MarshmallowSchema, missing


class Schema(MarshmallowSchema):
    """A marshmallow Schema whose loads skip absent fields that cannot produce anything."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._every_load_field = self.load_fields
        self._by_key = [(field.data_key if field.data_key is not None else name, name, field)
                        for name, field in self.load_fields.items()]
        self._always = frozenset(name for name, field in self.load_fields.items()
                                 if field.required or field.load_default is not missing)

    def _deserialize(self, data, **kwargs):
        if kwargs.get("many") or kwargs.get("partial") is not None or not isinstance(data, dict):
            return super()._deserialize(data, **kwargs)
        always = self._always
        self.load_fields = {name: field for key, name, field in self._by_key
                            if key in data or name in always}
        try:
            return super()._deserialize(data, **kwargs)
        finally:
            self.load_fields = self._every_load_field
