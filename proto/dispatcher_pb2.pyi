import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from flotilla.proto import objects_pb2 as _objects_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SessionRequest(_message.Message):
    __slots__ = ("description", "node_id", "addr")
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ADDR_FIELD_NUMBER: _ClassVar[int]
    description: _objects_pb2.NodeDescription
    node_id: str
    addr: str
    def __init__(self, description: _Optional[_Union[_objects_pb2.NodeDescription, _Mapping]] = ..., node_id: _Optional[str] = ..., addr: _Optional[str] = ...) -> None: ...

class SessionMessage(_message.Message):
    __slots__ = ("session_id", "node", "managers")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    MANAGERS_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    node: _objects_pb2.Node
    managers: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, session_id: _Optional[str] = ..., node: _Optional[_Union[_objects_pb2.Node, _Mapping]] = ..., managers: _Optional[_Iterable[str]] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class HeartbeatResponse(_message.Message):
    __slots__ = ("period",)
    PERIOD_FIELD_NUMBER: _ClassVar[int]
    period: _duration_pb2.Duration
    def __init__(self, period: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class TaskStatusUpdate(_message.Message):
    __slots__ = ("task_id", "status")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    status: _objects_pb2.TaskStatus
    def __init__(self, task_id: _Optional[str] = ..., status: _Optional[_Union[_objects_pb2.TaskStatus, _Mapping]] = ...) -> None: ...

class UpdateTaskStatusRequest(_message.Message):
    __slots__ = ("session_id", "updates")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    UPDATES_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    updates: _containers.RepeatedCompositeFieldContainer[TaskStatusUpdate]
    def __init__(self, session_id: _Optional[str] = ..., updates: _Optional[_Iterable[_Union[TaskStatusUpdate, _Mapping]]] = ...) -> None: ...

class UpdateTaskStatusResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class AssignmentsRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class AssignmentChange(_message.Message):
    __slots__ = ("action", "task")
    class Action(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        UPDATE: _ClassVar[AssignmentChange.Action]
        REMOVE: _ClassVar[AssignmentChange.Action]
    UPDATE: AssignmentChange.Action
    REMOVE: AssignmentChange.Action
    ACTION_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    action: AssignmentChange.Action
    task: _objects_pb2.Task
    def __init__(self, action: _Optional[_Union[AssignmentChange.Action, str]] = ..., task: _Optional[_Union[_objects_pb2.Task, _Mapping]] = ...) -> None: ...

class AssignmentsMessage(_message.Message):
    __slots__ = ("type", "applies_to", "results_in", "changes")
    class Type(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        COMPLETE: _ClassVar[AssignmentsMessage.Type]
        INCREMENTAL: _ClassVar[AssignmentsMessage.Type]
    COMPLETE: AssignmentsMessage.Type
    INCREMENTAL: AssignmentsMessage.Type
    TYPE_FIELD_NUMBER: _ClassVar[int]
    APPLIES_TO_FIELD_NUMBER: _ClassVar[int]
    RESULTS_IN_FIELD_NUMBER: _ClassVar[int]
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    type: AssignmentsMessage.Type
    applies_to: int
    results_in: int
    changes: _containers.RepeatedCompositeFieldContainer[AssignmentChange]
    def __init__(self, type: _Optional[_Union[AssignmentsMessage.Type, str]] = ..., applies_to: _Optional[int] = ..., results_in: _Optional[int] = ..., changes: _Optional[_Iterable[_Union[AssignmentChange, _Mapping]]] = ...) -> None: ...
