import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LogSubscriptionOptions(_message.Message):
    __slots__ = ("follow", "tail")
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    TAIL_FIELD_NUMBER: _ClassVar[int]
    follow: bool
    tail: int
    def __init__(self, follow: _Optional[bool] = ..., tail: _Optional[int] = ...) -> None: ...

class SubscribeLogsRequest(_message.Message):
    __slots__ = ("target", "options")
    TARGET_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    target: str
    options: LogSubscriptionOptions
    def __init__(self, target: _Optional[str] = ..., options: _Optional[_Union[LogSubscriptionOptions, _Mapping]] = ...) -> None: ...

class LogContext(_message.Message):
    __slots__ = ("service_id", "node_id", "task_id", "task_name", "node_name")
    SERVICE_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_NAME_FIELD_NUMBER: _ClassVar[int]
    NODE_NAME_FIELD_NUMBER: _ClassVar[int]
    service_id: str
    node_id: str
    task_id: str
    task_name: str
    node_name: str
    def __init__(self, service_id: _Optional[str] = ..., node_id: _Optional[str] = ..., task_id: _Optional[str] = ..., task_name: _Optional[str] = ..., node_name: _Optional[str] = ...) -> None: ...

class LogMessage(_message.Message):
    __slots__ = ("context", "timestamp", "stream", "data")
    class Stream(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        STDOUT: _ClassVar[LogMessage.Stream]
        STDERR: _ClassVar[LogMessage.Stream]
    STDOUT: LogMessage.Stream
    STDERR: LogMessage.Stream
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    STREAM_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    context: LogContext
    timestamp: _timestamp_pb2.Timestamp
    stream: LogMessage.Stream
    data: bytes
    def __init__(self, context: _Optional[_Union[LogContext, _Mapping]] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., stream: _Optional[_Union[LogMessage.Stream, str]] = ..., data: _Optional[bytes] = ...) -> None: ...

class SubscribeLogsMessage(_message.Message):
    __slots__ = ("messages", "warnings")
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[LogMessage]
    warnings: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, messages: _Optional[_Iterable[_Union[LogMessage, _Mapping]]] = ..., warnings: _Optional[_Iterable[str]] = ...) -> None: ...

class ListenSubscriptionsRequest(_message.Message):
    __slots__ = ("session_id", "node_id")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    node_id: str
    def __init__(self, session_id: _Optional[str] = ..., node_id: _Optional[str] = ...) -> None: ...

class SubscriptionMessage(_message.Message):
    __slots__ = ("id", "task_ids", "options", "close")
    ID_FIELD_NUMBER: _ClassVar[int]
    TASK_IDS_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    CLOSE_FIELD_NUMBER: _ClassVar[int]
    id: str
    task_ids: _containers.RepeatedScalarFieldContainer[str]
    options: LogSubscriptionOptions
    close: bool
    def __init__(self, id: _Optional[str] = ..., task_ids: _Optional[_Iterable[str]] = ..., options: _Optional[_Union[LogSubscriptionOptions, _Mapping]] = ..., close: _Optional[bool] = ...) -> None: ...

class PublishLogsMessage(_message.Message):
    __slots__ = ("subscription_id", "messages", "close")
    SUBSCRIPTION_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    CLOSE_FIELD_NUMBER: _ClassVar[int]
    subscription_id: str
    messages: _containers.RepeatedCompositeFieldContainer[LogMessage]
    close: bool
    def __init__(self, subscription_id: _Optional[str] = ..., messages: _Optional[_Iterable[_Union[LogMessage, _Mapping]]] = ..., close: _Optional[bool] = ...) -> None: ...

class PublishLogsResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
