"""A light XML tree written straight to the bytes lxml would write for it.

Building the Factur-X CII with `lxml.builder.ElementMaker` cost more than a millisecond per
invoice: every element is created in its own document, then moved into its parent, which
re-reconciles its namespaces at each level. Here the makers build plain tuples and
`serialise` writes them in one pass, with lxml's escaping; `to_lxml` builds the same tree with
lxml (the reference the tests compare against, and the path for text lxml would refuse).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeAlias

from lxml import etree

#: One element: its prefixed name ("ram:ID"), attributes, and children (text or elements).
Node: TypeAlias = tuple[str, dict[str, str], tuple["Node | str", ...]]


class Maker:
    """`Maker("ram").ID("x", schemeID="VA")`, as with lxml's ElementMaker, but a `Node`."""

    def __init__(self, prefix: str) -> None:
        self._prefix = prefix

    def __getattr__(self, name: str) -> Callable[..., Node]:
        tag = f"{self._prefix}:{name}"

        def make(*children: Node | str, **attrs: str) -> Node:
            return (tag, attrs, children)

        setattr(self, name, make)  # later look-ups skip __getattr__
        return make


#: The UTF-8 bytes of the characters that are not XML 1.0 `Char`s (lxml refuses them with a
#: ValueError), but for the lone surrogates, which UTF-8 cannot encode at all: the C0 controls
#: but tab, LF and CR (single bytes: every byte of a multi-byte sequence is ≥ 0x80), and
#: U+FFFE, U+FFFF.
_C0_NOT_XML = bytes(b for b in range(0x20) if b not in b"\t\n\r")
_FFFE, _FFFF = "\ufffe".encode(), "\uffff".encode()


def _xml_chars_only(data: bytes) -> bool:
    """Whether UTF-8 `data` holds XML 1.0 `Char`s only: C loops over the bytes (a regular
    expression over the text took as long as writing it)."""
    return (
        len(data.translate(None, _C0_NOT_XML)) == len(data)
        and _FFFE not in data
        and _FFFF not in data
    )


def escape_text(value: str) -> str:
    """Escaped as libxml2 escapes a text node."""
    return (
        value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\r", "&#13;")
    )


def _attribute(value: str) -> str:
    """Escaped as libxml2 escapes an attribute value (between double quotes)."""
    return escape_text(value).replace('"', "&quot;").replace("\n", "&#10;").replace("\t", "&#9;")


def serialise(root: Node, nsmap: dict[str, str]) -> bytes:
    """`etree.tostring(to_lxml(root, nsmap), xml_declaration=True, encoding="UTF-8")`."""
    out: list[str] = []
    _write(root, out, "".join(f' xmlns:{prefix}="{uri}"' for prefix, uri in nsmap.items()))
    data: bytes | None
    try:
        data = ("<?xml version='1.0' encoding='UTF-8'?>\n" + "".join(out)).encode()
    except UnicodeEncodeError:  # a lone surrogate
        data = None
    if data is None or not _xml_chars_only(data):  # lxml refuses it, with its own message
        return bytes(etree.tostring(to_lxml(root, nsmap), xml_declaration=True, encoding="UTF-8"))
    return data


def _write(node: Node, out: list[str], declarations: str = "") -> None:
    tag, attrs, children = node
    start = "<" + tag + declarations
    for name, value in attrs.items():
        start += f' {name}="{_attribute(value)}"'
    if not children:
        out.append(start + "/>")
    elif len(children) == 1 and isinstance(children[0], str):  # most elements: one text
        out.append(f"{start}>{escape_text(children[0])}</{tag}>")
    else:
        out.append(start + ">")
        for child in children:
            if isinstance(child, str):
                out.append(escape_text(child))
            else:
                _write(child, out)
        out.append(f"</{tag}>")


def to_lxml(root: Node, nsmap: dict[str, str]) -> etree._Element:
    """The same tree as an lxml element (children's text joined as ElementMaker joins it)."""

    def qualified(tag: str) -> str:
        prefix, _, name = tag.partition(":")
        return f"{{{nsmap[prefix]}}}{name}"

    def fill(element: etree._Element, node: Node) -> None:
        tag, attrs, children = node
        for name, value in attrs.items():
            element.set(name, value)
        last: etree._Element | None = None
        for child in children:
            if isinstance(child, str):
                if last is None:
                    element.text = (element.text or "") + child
                else:
                    last.tail = (last.tail or "") + child
            else:
                last = etree.SubElement(element, qualified(child[0]))
                fill(last, child)

    element = etree.Element(qualified(root[0]), nsmap=nsmap)
    fill(element, root)
    return element
