"""The machinery under vmctl's XML models: nodes bound to lxml elements, declared properties.

The shape follows virt-manager's ``virtinst``: every modelled element is a small `XMLNode` subclass
whose attributes are `Prop` descriptors naming a path relative to the node's element (``"memory"``,
``"os/type/@machine"``, ``"vmctl:ssh/@port"``). Reading a property walks the live lxml tree; writing
one creates the missing elements on the way, inserted at the place libvirt itself formats them (each
node class declares the child order of its element and of the nested elements its paths touch).

Because a node only ever edits the elements its properties name, the same object builds new XML or
edits XML parsed from libvirt in place: elements and attributes vmctl does not model stay where they
are. Text and attribute values are set through lxml, never by formatting strings, so quotes, ``<``
and ``&`` in any value come out escaped.

A node may be *lazy*: bound to a parent node and a path but without an element yet (``domain.cpu``
on a domain that has no ``<cpu>``). Reading its properties gives None; the first write creates the
element in its ordered place.
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar, Iterator, TypeVar

from lxml import etree

QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"
VMCTL_NS = "https://vmctl.dev/xmlns/instance/1"
NSMAP = {"qemu": QEMU_NS, "vmctl": VMCTL_NS}

N = TypeVar("N", bound="XMLNode")


def qname(step: str) -> str:
    """Turn ``"prefix:tag"`` into lxml's ``"{uri}tag"``; plain tags stay as they are."""
    if step.startswith("{"):
        return step
    if ":" in step:
        prefix, local = step.split(":", 1)
        return f"{{{NSMAP[prefix]}}}{local}"
    return step


def _split(path: str) -> tuple[list[str], str | None]:
    """Split ``"a/b/@c"`` into element steps ``["a", "b"]`` and attribute ``"c"`` (or None)."""
    if path in ("", "."):
        return [], None
    parts = path.split("/")
    attr = None
    if parts[-1].startswith("@"):
        attr = parts.pop()[1:]
    return [qname(p) for p in parts if p not in ("", ".")], (qname(attr) if attr else None)


def _rank(order: tuple[str, ...], tag: str) -> int | None:
    try:
        return order.index(tag)
    except ValueError:
        return None


def insert_ordered(parent: etree._Element, child: etree._Element, order: tuple[str, ...]) -> None:
    """Insert `child` into `parent` at the place `order` gives its tag.

    It goes after the last existing child whose tag ranks at or before it, else before the first
    child that ranks after it, else at the end. Children whose tags `order` does not know (elements
    vmctl does not model, comments) are never moved.
    """
    rank = _rank(order, child.tag) if order else None
    if rank is None:
        parent.append(child)
        return
    after = None
    before = None
    for existing in parent:
        if existing is child or not isinstance(existing.tag, str):
            continue
        r = _rank(order, existing.tag)
        if r is None:
            continue
        if r <= rank:
            after = existing
        elif before is None:
            before = existing
    if after is not None:
        after.addnext(child)
    elif before is not None:
        before.addprevious(child)
    else:
        parent.append(child)


class XMLNode:
    """One element of a libvirt XML document (or a lazy place for one)."""

    TAG: ClassVar[str] = ""
    NSMAP: ClassVar[dict[str, str] | None] = None
    # Child order for this node's element ("") and for nested elements its paths reach ("os", ...).
    ORDER: ClassVar[dict[str, tuple[str, ...]]] = {}

    def __init__(self, element: etree._Element | None = None, *, parent: "XMLNode | None" = None,
                 path: str | None = None):
        if element is None and parent is None:
            element = etree.Element(qname(self.TAG), nsmap=self.NSMAP)
        self._el = element
        self._parent = parent
        self._path = path

    # -- element access -------------------------------------------------------------------

    @property
    def element(self) -> etree._Element | None:
        """The bound element, or None while a lazy node has none yet."""
        if self._el is None and self._parent is not None:
            pel = self._parent.element
            if pel is not None:
                self._el = _find(pel, _split(self._path)[0])
        return self._el

    @property
    def exists(self) -> bool:
        return self.element is not None

    def ensure(self) -> etree._Element:
        """Return the element, creating it (and its missing ancestors) in order if it is lazy."""
        el = self.element
        if el is None:
            assert self._parent is not None
            self._el = self._parent.ensure_path(self._path)
            el = self._el
        return el

    def remove(self) -> None:
        """Detach this node's element from its parent (keeps the node usable as a detached copy)."""
        el = self.element
        if el is not None and el.getparent() is not None:
            el.getparent().remove(el)
        self._parent = None

    def order_for(self, relpath: str) -> tuple[str, ...]:
        order = self.ORDER.get(relpath, ())
        return tuple(qname(t) for t in order)

    def ensure_path(self, path: str) -> etree._Element:
        """Walk `path`'s element steps from this node's element, creating missing ones in order."""
        el = self.ensure()
        steps, _ = _split(path)
        rel: list[str] = []
        for step in steps:
            found = el.find(step)
            if found is None:
                found = make_child(el, step)
                insert_ordered(el, found, self.order_for("/".join(rel)))
            el = found
            rel.append(_unqualify(step))
        return el

    def add_child(self, node: N, container: str = "") -> N:
        """Insert a detached node's element under `container` (a path) at its ordered place."""
        parent_el = self.ensure_path(container) if container else self.ensure()
        insert_ordered(parent_el, node.ensure(), self.order_for(container))
        node._parent = None
        return node

    # -- output ---------------------------------------------------------------------------

    def to_xml(self) -> str:
        """Serialize this node's element, indented two spaces, as text (no XML declaration)."""
        el = self.ensure()
        copy = etree.fromstring(etree.tostring(el))
        _strip_whitespace(copy)
        etree.indent(copy, space="  ")
        return etree.tostring(copy, encoding="unicode") + "\n"

    @classmethod
    def from_xml(cls: type[N], text: str | bytes) -> N:
        """Parse XML text into a node of this class (no network, no entity expansion)."""
        parser = etree.XMLParser(resolve_entities=False, no_network=True, remove_blank_text=True)
        data = text.encode() if isinstance(text, str) else text
        root = etree.fromstring(data, parser)
        if root.tag != qname(cls.TAG):
            raise ValueError(f"expected <{cls.TAG}>, got <{root.tag}>")
        return cls(root)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.TAG}{'' if self.exists else ' (absent)'}>"


def make_child(parent: etree._Element, tag: str) -> etree._Element:
    """Append a new element to `parent`, declaring its namespace only when not already in scope."""
    nsmap = None
    if tag.startswith("{"):
        uri = tag[1:].split("}", 1)[0]
        if uri not in parent.nsmap.values():
            prefix = next((p for p, u in NSMAP.items() if u == uri), None)
            nsmap = {prefix: uri}
    return etree.SubElement(parent, tag, nsmap=nsmap)


def _unqualify(tag: str) -> str:
    if tag.startswith("{"):
        uri, local = tag[1:].split("}", 1)
        for prefix, known in NSMAP.items():
            if known == uri:
                return f"{prefix}:{local}"
    return tag


def _strip_whitespace(el: etree._Element) -> None:
    for node in el.iter():
        if len(node) and node.text is not None and not node.text.strip():
            node.text = None
        if node.tail is not None and not node.tail.strip():
            node.tail = None


def _find(el: etree._Element, steps: list[str]) -> etree._Element | None:
    for step in steps:
        el = el.find(step)
        if el is None:
            return None
    return el


# -- properties ---------------------------------------------------------------------------------

ALL_PROPS: list["Prop"] = []


def _to_int(text: str) -> int:
    return int(text, 0) if text.lower().startswith("0x") else int(text)


class Prop:
    """A typed value at a path relative to a node's element: text of an element, or an attribute.

    `kind` is one of ``str``, ``int``, ``yesno`` (bool as yes/no), ``onoff`` (bool as on/off),
    ``present`` (bool: the element exists; False removes it). Assigning None removes the value
    (and the element, for element text and presence).
    """

    KINDS = ("str", "int", "yesno", "onoff", "present")

    def __init__(self, path: str, kind: str = "str", doc: str = ""):
        if kind not in self.KINDS:
            raise ValueError(f"unknown property kind {kind}")
        self.path = path
        self.kind = kind
        self.steps, self.attr = _split(path)
        if kind == "present" and self.attr:
            raise ValueError("a presence property names an element, not an attribute")
        self.__doc__ = doc
        self.owner: type | None = None
        self.name = ""
        ALL_PROPS.append(self)

    def __set_name__(self, owner: type, name: str) -> None:
        self.owner = owner
        self.name = name

    # conversion
    def _decode(self, raw: str | None) -> Any:
        if raw is None:
            return None
        if self.kind == "int":
            return _to_int(raw.strip())
        if self.kind == "yesno":
            return raw == "yes"
        if self.kind == "onoff":
            return raw == "on"
        return raw

    def _encode(self, value: Any) -> str:
        if self.kind == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{self.name}: expected int, got {value!r}")
            return str(value)
        if self.kind == "yesno":
            return "yes" if value else "no"
        if self.kind == "onoff":
            return "on" if value else "off"
        if not isinstance(value, str):
            raise TypeError(f"{self.name}: expected str, got {value!r}")
        return value

    def get_raw(self, node: XMLNode) -> str | None:
        el = node.element
        if el is None:
            return None
        target = _find(el, self.steps)
        if target is None:
            return None
        if self.attr:
            return target.get(self.attr)
        return target.text if target.text is not None else ""

    def __get__(self, node: XMLNode | None, owner: type) -> Any:
        if node is None:
            return self
        if self.kind == "present":
            el = node.element
            return el is not None and _find(el, self.steps) is not None
        raw = self.get_raw(node)
        if raw is None:
            return None
        if not self.attr and self.kind == "str":
            return raw
        return self._decode(raw)

    def __set__(self, node: XMLNode, value: Any) -> None:
        if self.kind == "present":
            if value:
                node.ensure_path("/".join(_unqualify(s) for s in self.steps))
            else:
                self._delete(node)
            return
        if value is None:
            self._delete(node)
            return
        text = self._encode(value)
        target = node.ensure_path("/".join(_unqualify(s) for s in self.steps))
        if self.attr:
            target.set(self.attr, text)
        else:
            target.text = text

    def _delete(self, node: XMLNode) -> None:
        el = node.element
        if el is None:
            return
        target = _find(el, self.steps)
        if target is None:
            return
        if self.attr:
            target.attrib.pop(self.attr, None)
        elif target is not el:
            target.getparent().remove(target)
        else:
            target.text = None


class _NodeDescriptor:
    """What `Child` and `Children` share: the node class (or a thunk for forward references) and
    the path of the element(s) under the owning node."""

    def __init__(self, cls: type[XMLNode] | Callable[[], type[XMLNode]], path: str):
        self._cls = cls
        self.path = path
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @property
    def cls(self) -> type[XMLNode]:
        c = self._cls
        return c if isinstance(c, type) else c()


class Child(_NodeDescriptor):
    """A single child node of a given class at a path; lazy until one of its properties is set."""

    def __get__(self, node: XMLNode | None, owner: type) -> Any:
        if node is None:
            return self
        return self.cls(None, parent=node, path=self.path)


class Children(_NodeDescriptor):
    """A list of child nodes of one class: the elements matching `path` under the node, in order."""

    def __get__(self, node: XMLNode | None, owner: type) -> Any:
        if node is None:
            return self
        el = node.element
        if el is None:
            return []
        steps, _ = _split(self.path)
        *container, leaf = steps
        parent = _find(el, container)
        if parent is None:
            return []
        return [self.cls(child) for child in parent.findall(leaf)]


def iter_node_props(node: XMLNode) -> Iterator[tuple[type, str, Any]]:
    """Yield (class, property name, value) for every Prop declared on the node's class chain."""
    seen = set()
    for klass in type(node).__mro__:
        for name, attr in vars(klass).items():
            if isinstance(attr, Prop) and name not in seen:
                seen.add(name)
                yield klass, name, getattr(node, name)


def iter_tree(node: XMLNode) -> Iterator[XMLNode]:
    """Yield `node` and every modelled descendant that exists (through Child and Children)."""
    if not node.exists:
        return
    yield node
    seen = set()
    for klass in type(node).__mro__:
        for name, attr in vars(klass).items():
            if name in seen:
                continue
            seen.add(name)
            if isinstance(attr, Child):
                yield from iter_tree(getattr(node, name))
            elif isinstance(attr, Children):
                for child in getattr(node, name):
                    yield from iter_tree(child)
