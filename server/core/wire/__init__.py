"""Every shape that crosses the wire, declared once as msgspec Structs (pure).

``responses`` are the REST answers (and the <Job> and <Image> that events carry),
``requests`` the JSON bodies the API takes, ``bus`` the messages between processes
(tagged by event name), ``fields`` the field types they share. The presenter builds the
responses, request validation checks input against the requests' field types, and the
OpenAPI document's ``components.schemas`` is generated from both.
"""
