"""A ``WriteBatch`` that encodes its writes straight to protobuf: the allocator's big commits.

Why: profiled on the emulator (docs/decisions.md, "The allocator's staging"), staging one
allocator batch of 100 purchases (about 530 writes) took most of the turn in the client
library's value encoding, which builds every ``Value`` through proto-plus wrappers (about 1 ms
a write on a loaded 2-core machine), not in deciding or committing. This subclass keeps the
library's own rules for what a write means (its ``DocumentExtractor`` classes decide the field
paths, the transforms, the update mask and the merge) and only builds the resulting ``Write``
messages with the plain protobuf classes underneath, then hands them to the library's
``commit`` unchanged.

Anything outside the common shapes (a value type or a transform it does not encode, a merge
given as a list of fields) is staged by the library itself, so the result is always the
library's. ``tests/unit/test_encoded_batch.py`` checks write for write that both produce equal
messages.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from google.api_core.datetime_helpers import DatetimeWithNanoseconds
from google.cloud.firestore_v1 import _helpers
from google.cloud.firestore_v1.batch import WriteBatch
from google.cloud.firestore_v1.types import common as common_types
from google.cloud.firestore_v1.types import write as write_types

_WritePb: Any = write_types.Write.pb()
_REQUEST_TIME = write_types.DocumentTransform.FieldTransform.ServerValue.REQUEST_TIME


class _Unsupported(Exception):
    """A value or option this encoder leaves to the library."""


def _fill(target: Any, value: Any) -> None:
    """Encode ``value`` into the protobuf ``Value`` message ``target``, as ``encode_value`` does."""
    if value is None:
        target.null_value = 0
    elif isinstance(value, bool):
        target.boolean_value = value
    elif isinstance(value, int):
        target.integer_value = value
    elif isinstance(value, float):
        target.double_value = value
    elif isinstance(value, str):
        target.string_value = value
    elif isinstance(value, DatetimeWithNanoseconds):  # as encode_value: its nanoseconds kept
        target.timestamp_value.CopyFrom(value.timestamp_pb())
    elif isinstance(value, datetime):  # protobuf's own conversion (a naive datetime is UTC)
        target.timestamp_value.FromDatetime(value)
    elif type(value) is bytes:
        target.bytes_value = value
    elif isinstance(value, (list, tuple)):
        array = target.array_value
        array.SetInParent()
        for element in value:
            _fill(array.values.add(), element)
    elif type(value) is dict:
        mapping = target.map_value
        mapping.SetInParent()
        _fill_fields(mapping.fields, value)
    else:
        raise _Unsupported(type(value))


def _fill_fields(fields: Any, values: Mapping[str, Any]) -> None:
    for key, value in values.items():
        _fill(fields[key], value)


def _transforms(write: Any, extractor: Any) -> None:
    """The extractor's transforms in the library's order (sorted by field path)."""
    if extractor.array_removes or extractor.maximums or extractor.minimums:
        raise _Unsupported("transform")
    staged: list[tuple[Any, str, Any]] = [(p, "server", None) for p in extractor.server_timestamps]
    staged += [(p, "union", v) for p, v in extractor.array_unions.items()]
    staged += [(p, "increment", v) for p, v in extractor.increments.items()]
    for path, kind, value in sorted(staged, key=lambda item: item[0]):
        transform = write.update_transforms.add()
        transform.field_path = path.to_api_repr()
        if kind == "server":
            transform.set_to_server_value = _REQUEST_TIME
        elif kind == "union":
            array = transform.append_missing_elements
            array.SetInParent()
            for element in value:
                _fill(array.values.add(), element)
        else:
            _fill(transform.increment, value)


def _update_write(path: str, extractor: Any, mask: list[str] | None) -> Any:
    write = _WritePb()
    write.update.name = path
    _fill_fields(write.update.fields, extractor.set_fields)
    if mask is not None:
        write.update_mask.SetInParent()
        write.update_mask.field_paths.extend(mask)
    return write


def _precondition(write: Any, option: Any) -> None:
    if option is None:
        return
    if isinstance(option, _helpers.LastUpdateOption):  # one a write at most: the library's own conversion
        precondition = common_types.Precondition(update_time=option._last_update_time)
        write.current_document.CopyFrom(common_types.Precondition.pb(precondition))
    elif isinstance(option, _helpers.ExistsOption):
        write.current_document.exists = option._exists
    else:
        raise _Unsupported(type(option))


def create_pb(path: str, data: dict[str, Any]) -> Any:
    extractor = _helpers.DocumentExtractor(data)
    if extractor.deleted_fields:
        raise _Unsupported("DELETE_FIELD")  # the library raises its own error for it
    write = _update_write(path, extractor, None)
    write.current_document.exists = False
    _transforms(write, extractor)
    return write


def set_pb(path: str, data: dict[str, Any], merge: bool) -> Any:
    extractor: _helpers.DocumentExtractor
    if merge is True:
        merging = extractor = _helpers.DocumentExtractorForMerge(data)
        merging.apply_merge(True)
        if merging.deleted_fields:
            raise _Unsupported("DELETE_FIELD")
        mask = [p.to_api_repr() for p in merging.merge if p not in merging.transform_merge]
        write = _update_write(path, merging, mask)
    elif merge is False:
        extractor = _helpers.DocumentExtractor(data)
        if extractor.deleted_fields:
            raise _Unsupported("DELETE_FIELD")
        write = _update_write(path, extractor, None)
    else:
        raise _Unsupported("merge by field list")
    _transforms(write, extractor)
    return write


def update_pb(path: str, data: dict[str, Any], option: Any) -> Any:
    extractor = _helpers.DocumentExtractorForUpdate(data)
    if extractor.empty_document or extractor.deleted_fields:
        raise _Unsupported("empty or DELETE_FIELD")
    transform_paths = extractor.transform_paths
    mask = [p.to_api_repr() for p in extractor.top_level_paths if p not in transform_paths]
    write = _update_write(path, extractor, mask)
    _precondition(write, option if option is not None else _helpers.ExistsOption(exists=True))
    _transforms(write, extractor)
    return write


def delete_pb(path: str, option: Any) -> Any:
    write = _WritePb()
    write.delete = path
    _precondition(write, option)
    return write


class EncodedWriteBatch(WriteBatch):
    """``db.batch()`` with the same methods and results, staged faster (see the module doc)."""

    def __init__(self, client: Any) -> None:
        super().__init__(client)
        self.fallbacks = 0  # writes the library staged itself

    def _stage(self, reference: Any, build: Any) -> bool:
        try:
            write = build()
        except (_Unsupported, TypeError):
            self.fallbacks += 1
            return False
        self._document_references[reference._document_path] = reference
        self._add_write_pbs([write_types.Write.wrap(write)])
        return True

    def create(self, reference: Any, document_data: dict[str, Any]) -> None:
        if not self._stage(reference, lambda: create_pb(reference._document_path, document_data)):
            super().create(reference, document_data)

    def set(self, reference: Any, document_data: dict[str, Any], merge: Any = False) -> None:
        if not self._stage(reference, lambda: set_pb(reference._document_path, document_data, merge)):
            super().set(reference, document_data, merge=merge)

    def update(self, reference: Any, field_updates: dict[str, Any], option: Any = None) -> None:
        if option.__class__.__name__ == "ExistsOption":
            raise ValueError("you must not pass an explicit write option to update.")
        if not self._stage(reference, lambda: update_pb(reference._document_path, field_updates, option)):
            super().update(reference, field_updates, option=option)

    def delete(self, reference: Any, option: Any = None) -> None:
        if not self._stage(reference, lambda: delete_pb(reference._document_path, option)):
            super().delete(reference, option=option)



