# ninewall interpreter guard (wall 2). ninewall writes this file read-only
# into the sandbox, the profile's settings beside it (/.ninewall/config, a
# Python literal), and starts the interpreter on it: python -I -S -B
# /.ninewall/guard.py (-c CODE | - | SCRIPT) ARGS; or on the same code
# compiled once on the host (/.ninewall/guard.pyc), which starts ~5 ms sooner.
#
# It is a language restriction, in the manner of RestrictedPython: the user's
# code is parsed, checked and rewritten *before* any of it runs, and then runs
# against builtins of the guard's choosing.
#
#  - No name beginning with "__" (no __builtins__, __import__, __class__ of a
#    name), except __name__ and the special methods a class of one's own
#    defines (__init__, __repr__, comparisons, container methods, ...).
#  - Every attribute read goes through the guard: names beginning with "__"
#    only from a short list (special methods, __name__, __class__, ...);
#    names beginning with "_" only on objects of the user's own classes; no
#    frames, code objects or generator internals (gi_frame, f_globals, ...);
#    on a module only its public names, and a module reached through another
#    (datetime.sys) only if the profile allows it.
#  - import only of the profile's modules; no exec, eval, compile, globals,
#    locals, breakpoint; getattr/setattr/vars follow the same rules; no
#    format string walks attributes past them.
#  - An audit hook (PEP 578) stays as the second layer for what the library
#    code the user calls does: no processes, sockets, ctypes or
#    sub-interpreters, files only within the profile's places, by any door.
#
# Whatever it refuses is reported, one JSON line each, on a descriptor the
# user's code cannot name; the supervisor records it as `guard.refused`.
#
# It is not the last line: what gets past it meets the kernel walls (mount
# view, Landlock, seccomp), which are built whatever this file does.
CONFIG_PATH = "/.ninewall/config"


def _config():
    with open(CONFIG_PATH, "rb") as f:
        text = f.read()
    return eval(compile(text, CONFIG_PATH, "eval", dont_inherit=True), {"__builtins__": {}})


def _guard(config):
    import _ast
    import _string
    import builtins
    import posix
    import sys

    profile = config["profile"]
    allowed = frozenset(config["modules"])
    listing = ", ".join(sorted(allowed)) or "none"
    denied_modules = frozenset(config["denied_modules"]) - allowed
    trusted = tuple(d.rstrip("/") + "/" for d in config["trusted"])
    writable = tuple(d.rstrip("/") + "/" for d in config["writable"])
    readable = trusted + writable + ("/proc/self/", "/dev/")
    workspace = config["workspace"]

    # The guard's own references: user code never reaches these objects, so
    # whatever it rebinds in its own namespace changes nothing here.
    real_getattr, real_setattr, real_delattr = getattr, setattr, delattr
    real_type, real_isinstance, real_str = type, isinstance, str
    str_of = str.__str__  # an exact str, whatever subclass it is given
    ModuleType = real_type(sys)
    FunctionType = real_type(_guard)
    CodeType = real_type(_guard.__code__)
    frame = sys._getframe()
    FrameType = real_type(frame)
    del frame
    modules = sys.modules
    own_file = _guard.__code__.co_filename

    # --- the report descriptor -------------------------------------------
    report_fd = -1
    fd_text = posix.environ.pop(b"NINEWALL_GUARD_FD", None)
    if fd_text is not None and fd_text.isdigit():
        report_fd = int(fd_text)
    reported = [0]

    def user_line():
        # The innermost frame of the user's code: its line is the record's.
        f = sys._getframe(1)
        while f is not None:
            if f.f_code.co_filename == user_filename[0]:
                return f.f_lineno
            f = f.f_back
        return None

    def report(what, line=None):
        reported[0] += 1
        if report_fd < 0 or reported[0] > 1000:
            return
        if line is None:
            line = user_line()
        text = what if len(what) <= 300 else what[:300] + "..."
        record = '{"what": %s, "line": %s}\n' % (quote(text), "null" if line is None else int(line))
        try:
            posix.write(report_fd, record.encode("utf-8", "surrogateescape"))
        except OSError:
            pass

    def quote(text):
        out = ['"']
        for c in text:
            o = ord(c)
            if c == '"' or c == "\\":
                out.append("\\" + c)
            elif 0xD800 <= o < 0xE000:
                out.append("\\ufffd")
            elif o < 0x20 or o == 0x7F:
                out.append("\\u%04x" % o)
            else:
                out.append(c)
        out.append('"')
        return "".join(out)

    user_filename = ["<string>"]

    def refused(what):
        return f"{what} is not allowed by profile {profile!r}"

    def refuse(error, what, detail=""):
        report(what)
        raise error(refused(what) + detail)

    # --- imports ------------------------------------------------------------
    def module_allowed(name):
        return real_isinstance(name, real_str) and name.partition(".")[0] in allowed

    def guarded_import(name, as_top):
        name = str_of(name)
        if not module_allowed(name):
            report(f"import of {name!r}")
            raise ImportError(refused(f"import of {name!r}") + f"; modules you may import: {listing}", name=name)
        real_import(name)
        module = modules[name]
        return modules[name.partition(".")[0]] if as_top else module

    def guarded_from(name, attr):
        module = guarded_import(name, False)
        why = attribute_refusal(module, attr)
        if why is not None:
            refuse(ImportError, why)
        try:
            value = real_getattr(module, attr)
        except AttributeError:
            # `from package import submodule`
            return guarded_import(name + "." + attr, False)
        return checked_value(module, attr, value)

    # The user's builtins keep the real __import__: user code cannot name it
    # (every import statement is rewritten to guarded_import, but `from
    # __future__`), and C code calls it through the caller's builtins with
    # names of its own (datetime.strftime imports time). The audit hook still
    # refuses the denied modules there.
    real_import = builtins.__import__

    # --- attributes -----------------------------------------------------------
    # Special methods a class of one's own may define, and read.
    special_methods = frozenset(
        """__init__ __new__ __post_init__ __repr__ __str__ __format__ __bytes__ __hash__ __bool__
        __eq__ __ne__ __lt__ __le__ __gt__ __ge__ __len__ __length_hint__ __iter__ __next__
        __reversed__ __contains__ __getitem__ __setitem__ __delitem__ __missing__ __call__
        __enter__ __exit__ __aenter__ __aexit__ __aiter__ __anext__ __await__
        __add__ __sub__ __mul__ __matmul__ __truediv__ __floordiv__ __mod__ __divmod__ __pow__
        __lshift__ __rshift__ __and__ __xor__ __or__ __radd__ __rsub__ __rmul__ __rmatmul__
        __rtruediv__ __rfloordiv__ __rmod__ __rdivmod__ __rpow__ __rlshift__ __rrshift__
        __rand__ __rxor__ __ror__ __iadd__ __isub__ __imul__ __imatmul__ __itruediv__
        __ifloordiv__ __imod__ __ipow__ __ilshift__ __irshift__ __iand__ __ixor__ __ior__
        __neg__ __pos__ __abs__ __invert__ __complex__ __int__ __float__ __index__ __round__
        __trunc__ __floor__ __ceil__""".split()
    )
    # Besides those, what reading leads nowhere: strings, and the class.
    readable_dunders = special_methods | {"__name__", "__qualname__", "__doc__", "__module__", "__class__", "__dict__"}
    # A named tuple's public API begins with "_" (so as not to clash with
    # field names).
    namedtuple_api = frozenset({"_replace", "_asdict", "_fields", "_field_defaults", "_make"})
    # Names a class body may assign.
    class_dunders = frozenset({"__slots__", "__match_args__"})
    # Public names that lead to frames, code and the interpreter's internals.
    internals = frozenset(
        """gi_frame gi_code gi_yieldfrom cr_frame cr_code cr_await cr_origin ag_frame ag_code ag_await
        f_back f_builtins f_code f_globals f_locals f_trace tb_frame tb_next co_code co_consts
        mro""".split()
    )
    # Names that the transformed code reads through the full check; all
    # others take the short way (`public_attr`).
    checked_names = internals | {"format", "format_map", "Formatter", "attrgetter", "methodcaller"}

    user_class_ids = set()
    user_classes = []  # kept alive, so that an id is never reused

    def is_user(obj):
        if id(real_type(obj)) in user_class_ids:
            return True
        return real_isinstance(obj, type) and id(obj) in user_class_ids

    def describe(obj):
        if real_type(obj) is ModuleType:
            return f"module {obj.__name__!r}"
        if real_isinstance(obj, type):
            return f"class {obj.__name__!r}"
        return f"a {real_type(obj).__name__!r} object"

    def dotted(obj, name):
        if real_type(obj) is ModuleType:
            return f"{obj.__name__}.{name}"
        return f"{name!r} of {describe(obj)}"

    def attribute_refusal(obj, name):
        """Why `obj.name` may not be read, or None."""
        if name.startswith("__") and name.endswith("__"):
            if name not in readable_dunders:
                return f"attribute {name!r}"
            if name == "__dict__" and not is_user(obj):
                return f"attribute '__dict__' of {describe(obj)}"
            return None
        if name.startswith("_"):
            if name in namedtuple_api and real_isinstance(obj, (tuple, type)) and real_getattr(obj, "_fields", None) is not None:
                return None
            if not is_user(obj):
                return f"private attribute {name!r} of {describe(obj)}"
            return None
        if name == "mro" or (name in internals and not is_user(obj)):
            # mro() would hand out the library classes a class of one's own
            # derives from, such as string.Formatter behind the guard's.
            return f"attribute {name!r} of {describe(obj)}"
        return None

    def checked_value(obj, name, value):
        """What user code gets for `obj.name`: modules only if allowed, and
        the guard's own versions of what walks attributes by name."""
        t = real_type(value)
        if t is ModuleType:
            mod = value.__name__
            if not module_allowed(mod):
                refuse(AttributeError, f"module {mod!r} (as {dotted(obj, name)})")
        elif id(value) in gadgets:
            refuse(AttributeError, dotted(obj, name))
        elif name in ("format", "format_map"):
            if real_isinstance(obj, real_str):
                return safe_format_of(obj, name == "format_map")
            if obj is real_str:
                return safe_str_format if name == "format" else safe_str_format_map
        elif name == "Formatter" and t is type and value.__module__ == "string":
            return safe_formatter_class()
        elif name == "attrgetter" and value is operator_attr("attrgetter"):
            return safe_attrgetter
        elif name == "methodcaller" and value is operator_attr("methodcaller"):
            return safe_methodcaller
        return value

    def operator_attr(name):
        op = modules.get("operator")
        return op.__dict__.get(name) if op is not None else None

    def guarded_getattr(obj, name, *default):
        if not real_isinstance(name, real_str):
            raise TypeError("attribute name must be string")
        name = str_of(name)
        why = attribute_refusal(obj, name)
        if why is not None:
            refuse(AttributeError, why)
        try:
            value = real_getattr(obj, name)
        except AttributeError:
            if default:
                return default[0]
            raise
        return checked_value(obj, name, value)

    def public_attr(obj, name):
        # The transformed code's way for names with no rule of their own.
        value = real_getattr(obj, name)
        if real_type(value) is ModuleType or (real_type(obj) is ModuleType and id(value) in gadgets):
            return checked_value(obj, name, value)
        return value

    def guarded_hasattr(obj, name):
        try:
            guarded_getattr(obj, name)
        except AttributeError as e:
            if "is not allowed by profile" in str(e):
                raise
            return False
        return True

    def write_refusal(obj, name):
        if name.startswith("__") and name.endswith("__"):
            return f"setting attribute {name!r}"
        if real_type(obj) is ModuleType:
            return f"changing {describe(obj)}"
        if real_isinstance(obj, type) and not is_user(obj):
            return f"changing {describe(obj)}"
        if name.startswith("_") and not is_user(obj):
            return f"setting private attribute {name!r} of {describe(obj)}"
        return None

    def writable_object(obj):
        # The transformed code's `obj.name = ...` and `del obj.name`: the
        # name is checked when the code is, the object here.
        if real_type(obj) is ModuleType or (real_isinstance(obj, type) and not is_user(obj)):
            refuse(AttributeError, f"changing {describe(obj)}")
        return obj

    def private_writable(obj):
        if not is_user(obj):
            refuse(AttributeError, f"setting a private attribute of {describe(obj)}")
        return obj

    def guarded_setattr(obj, name, value):
        if not real_isinstance(name, real_str):
            raise TypeError("attribute name must be string")
        name = str_of(name)
        why = write_refusal(obj, name)
        if why is not None:
            refuse(AttributeError, why)
        real_setattr(obj, name, value)

    def guarded_delattr(obj, name):
        if not real_isinstance(name, real_str):
            raise TypeError("attribute name must be string")
        name = str_of(name)
        why = write_refusal(obj, name)
        if why is not None:
            refuse(AttributeError, why.replace("setting", "deleting").replace("changing", "changing"))
        real_delattr(obj, name)

    def guarded_vars(*obj):
        if not obj:
            refuse(PermissionError, "vars() without an argument")
        if not is_user(obj[0]):
            refuse(PermissionError, f"vars() of {describe(obj[0])}")
        return obj[0].__dict__

    # --- format strings -----------------------------------------------------
    def fields_walk_attributes(fmt, depth=0):
        if depth > 2:
            return True
        for _literal, field, spec, _conv in _string.formatter_parser(fmt):
            if field is not None:
                _first, rest = _string.formatter_field_name_split(field)
                for is_attr, _key in rest:
                    if is_attr:
                        return True
            if spec and fields_walk_attributes(spec, depth + 1):
                return True
        return False

    formatter = [None]

    def safe_formatter_class():
        if formatter[0] is None:
            import string

            class Formatter(string.Formatter):
                def get_field(self, field_name, args, kwargs):
                    first, rest = _string.formatter_field_name_split(field_name)
                    obj = self.get_value(first, args, kwargs)
                    for is_attr, key in rest:
                        obj = guarded_getattr(obj, key) if is_attr else obj[key]
                    return obj, first

            Formatter.__module__ = "string"
            formatter[0] = Formatter
        return formatter[0]

    def safe_format(fmt, args, kwargs, mapping):
        fmt = str_of(fmt)
        if not fields_walk_attributes(fmt):
            return fmt.format_map(mapping) if mapping is not None else fmt.format(*args, **kwargs)
        f = safe_formatter_class()()
        return f.vformat(fmt, args, mapping if mapping is not None else kwargs)

    def safe_format_of(s, is_map):
        if is_map:
            return lambda mapping: safe_format(s, (), {}, mapping)
        return lambda *args, **kwargs: safe_format(s, args, kwargs, None)

    def safe_str_format(s, *args, **kwargs):
        return safe_format(s, args, kwargs, None)

    def safe_str_format_map(s, mapping):
        return safe_format(s, (), {}, mapping)

    def safe_attrgetter(*names):
        paths = [str_of(n).split(".") for n in names]

        def get(obj):
            found = []
            for path in paths:
                value = obj
                for part in path:
                    value = guarded_getattr(value, part)
                found.append(value)
            return found[0] if len(found) == 1 else tuple(found)

        return get

    def safe_methodcaller(name, *args, **kwargs):
        name = str_of(name)
        return lambda obj: guarded_getattr(obj, name)(*args, **kwargs)

    # --- typing's string annotations ----------------------------------------
    # typing.get_type_hints (and functools.singledispatch through it) evaluate
    # strings: they may only name things, as an annotation does.
    annotation_nodes = (
        _ast.Expression, _ast.Name, _ast.Load, _ast.Subscript, _ast.Tuple, _ast.List,
        _ast.Constant, _ast.BinOp, _ast.BitOr, _ast.Slice,
    )

    def forward_ref_refusal(text):
        try:
            tree = compile(text, "<annotation>", "eval", _ast.PyCF_ONLY_AST)
        except SyntaxError:
            return None
        for node in walk(tree):
            if not real_isinstance(node, annotation_nodes):
                return f"the string annotation {text!r}"
            if real_isinstance(node, _ast.Name) and node.id.startswith("_"):
                return f"the string annotation {text!r}"
        return None

    def patch_typing(typing):
        original = typing.ForwardRef._evaluate

        def _evaluate(self, globalns, localns, *args, **kwargs):
            why = forward_ref_refusal(self.__forward_arg__)
            if why is not None:
                refuse(NameError, why)
            # Whatever namespace it is given, no builtin but the user's.
            globalns = dict(globalns) if globalns is not None else {}
            globalns["__builtins__"] = safe_builtins
            return original(self, globalns, localns, *args, **kwargs)

        typing.ForwardRef._evaluate = _evaluate

    class TypingPatcher:
        # A meta path finder that only watches for typing being loaded.
        @staticmethod
        def find_spec(name, path=None, target=None):
            if name != "typing":
                return None
            for finder in sys.meta_path:
                if finder is TypingPatcher:
                    continue
                spec = finder.find_spec(name, path, target)
                if spec is not None:
                    loader = spec.loader
                    exec_module = loader.exec_module

                    class Loader:
                        @staticmethod
                        def create_module(spec):
                            return None

                        @staticmethod
                        def exec_module(module):
                            exec_module(module)
                            patch_typing(module)

                    spec.loader = Loader
                    return spec
            return None

    # --- the user's builtins --------------------------------------------------
    def refusing(name):
        def refused_call(*args, **kwargs):
            refuse(PermissionError, f"{name}()", " (the guard runs only the code it checked)")

        refused_call.__name__ = name
        return refused_call

    real_build_class = builtins.__build_class__

    def build_class(func, name, *bases, **kwargs):
        cls = real_build_class(func, name, *bases, **kwargs)
        # A class the user's class statement made (its body set __module__
        # to the user's __name__), not one a metaclass handed back from a
        # library.
        if real_isinstance(cls, type) and type.__dict__["__dict__"].__get__(cls).get("__module__") == "__main__":
            user_classes.append(cls)
            user_class_ids.add(id(cls))
        return cls

    def leave(code=None):
        raise SystemExit(code)

    kept = """abs aiter all anext any ascii bin bool bytearray bytes callable chr classmethod complex
        delattr dict dir divmod enumerate filter float format frozenset hash hex id input int
        isinstance issubclass iter len list map max memoryview min next object oct open ord pow
        print property range repr reversed round set slice sorted staticmethod str sum super
        tuple type zip None Ellipsis NotImplemented False True""".split()
    safe_builtins = {name: real_getattr(builtins, name) for name in kept}
    for name in dir(builtins):
        value = real_getattr(builtins, name)
        if real_isinstance(value, type) and issubclass(value, BaseException):
            safe_builtins[name] = value
    safe_builtins.update(
        {
            "getattr": guarded_getattr,
            "setattr": guarded_setattr,
            "delattr": guarded_delattr,
            "hasattr": guarded_hasattr,
            "vars": guarded_vars,
            "exit": leave,
            "quit": leave,
            "__build_class__": build_class,
            "__import__": real_import,
            "__nw_getattr__": guarded_getattr,
            "__nw_attr__": public_attr,
            "__nw_write__": writable_object,
            "__nw_private__": private_writable,
            "__nw_import__": guarded_import,
            "__nw_from__": guarded_from,
        }
    )
    for name in ("eval", "exec", "compile", "globals", "locals", "breakpoint", "help"):
        safe_builtins[name] = refusing(name)
    gadgets = {
        id(v)
        for v in (
            eval, exec, compile, globals, locals, vars, getattr, setattr, delattr, builtins.__import__,
            breakpoint, FunctionType, CodeType, FrameType, sys._getframe,
        )
    }

    # --- the check, and the rewrite -------------------------------------------
    def walk(node):
        todo = [node]
        while todo:
            n = todo.pop()
            yield n
            for field in n._fields:
                value = real_getattr(n, field, None)
                if real_isinstance(value, list):
                    todo.extend(v for v in value if real_isinstance(v, _ast.AST))
                elif real_isinstance(value, _ast.AST):
                    todo.append(value)

    class Rewriter:
        def __init__(self):
            self.problems = []
            self.classes = set()

        def problem(self, node, what, why=""):
            line = real_getattr(node, "lineno", None)
            self.problems.append((line, what, why))

        def name(self, node, name, what="name", in_class=False, load=False):
            if name == "__name__" and load:
                return
            if name.startswith("__"):
                if in_class and name in class_dunders:
                    return
                self.problem(
                    node,
                    f"the {what} {name!r}",
                    "names that begin with '__' are the interpreter's; your classes may define"
                    " special methods such as __init__ and __repr__",
                )

        def call(self, helper, node, *args):
            new = _ast.Call(
                func=_ast.Name(id=helper, ctx=_ast.Load()),
                args=list(args),
                keywords=[],
            )
            return copy_location(new, node)

        def const(self, value, node):
            return copy_location(_ast.Constant(value=value), node)

        def visit_list(self, nodes, in_class=False):
            out = []
            for n in nodes:
                if n is None:  # a dict display's `**mapping`
                    out.append(n)
                    continue
                r = self.visit(n, in_class)
                if real_isinstance(r, list):
                    out.extend(r)
                elif r is not None:
                    out.append(r)
            return out

        def generic(self, node, in_class=False):
            for field in node._fields:
                value = real_getattr(node, field, None)
                if real_isinstance(value, list):
                    real_setattr(node, field, self.visit_list(value, in_class and field == "body"))
                elif real_isinstance(value, _ast.AST):
                    real_setattr(node, field, self.visit(value, False))
            return node

        def visit(self, node, in_class=False):
            kind = real_type(node).__name__
            method = real_getattr(self, "visit_" + kind, None)
            if method is not None:
                return method(node, in_class)
            return self.generic(node)

        def visit_Name(self, node, in_class):
            self.name(
                node,
                node.id,
                in_class=in_class and real_isinstance(node.ctx, _ast.Store),
                load=real_isinstance(node.ctx, _ast.Load),
            )
            if node.id == "super" and real_isinstance(node.ctx, _ast.Load):
                self.problem(node, "super used other than as super()", "call super() without arguments")
            return node

        def visit_Call(self, node, in_class):
            f = node.func
            if real_isinstance(f, _ast.Name) and f.id == "super":
                if node.args or node.keywords:
                    self.problem(node, "super() with arguments", "call super() without arguments")
                node.args = self.visit_list(node.args)
                node.keywords = self.visit_list(node.keywords)
                return node
            return self.generic(node)

        def visit_Attribute(self, node, in_class):
            attr = node.attr
            value = self.visit(node.value)
            if attr.startswith("__") and attr.endswith("__"):
                if attr not in readable_dunders or not real_isinstance(node.ctx, _ast.Load):
                    self.problem(node, f"the attribute {attr!r}", "attributes that begin with '__' are the interpreter's")
                    return node
            elif attr in internals:
                # Allowed on the user's own objects: decided when it runs.
                pass
            if real_isinstance(node.ctx, _ast.Load):
                plain = not attr.startswith("_") and attr not in checked_names
                return self.call("__nw_attr__" if plain else "__nw_getattr__", node, value, self.const(attr, node))
            guard = "__nw_private__" if attr.startswith("_") else "__nw_write__"
            node.value = self.call(guard, node, value)
            return node

        def visit_AugAssign(self, node, in_class):
            target = node.target
            if real_isinstance(target, _ast.Attribute):
                self.visit(target)  # checks the name, wraps the object
                if target.attr.startswith("_") or target.attr in checked_names:
                    # Read natively by the augmented assignment: only where
                    # a read through the guard would be allowed too.
                    target.value = self.call("__nw_private__", target, target.value)
            else:
                node.target = self.visit(target, in_class)
            node.value = self.visit(node.value)
            return node

        def visit_Assign(self, node, in_class):
            node.targets = [self.visit(t, in_class) for t in node.targets]
            node.value = self.visit(node.value)
            return node

        def visit_arg(self, node, in_class):
            self.name(node, node.arg, "argument")
            return self.generic(node)

        def visit_keyword(self, node, in_class):
            if node.arg is not None:
                self.name(node, node.arg, "keyword argument")
            return self.generic(node)

        def visit_FunctionDef(self, node, in_class):
            if not (in_class and node.name in special_methods):
                self.name(node, node.name, "function name")
            return self.generic(node)

        visit_AsyncFunctionDef = visit_FunctionDef

        def visit_ClassDef(self, node, in_class):
            self.name(node, node.name, "class name")
            self.classes.add(node.name)
            node.bases = self.visit_list(node.bases)
            node.keywords = self.visit_list(node.keywords)
            node.decorator_list = self.visit_list(node.decorator_list)
            node.body = self.visit_list(node.body, True)
            return node

        def visit_Global(self, node, in_class):
            for n in node.names:
                self.name(node, n)
            return node

        visit_Nonlocal = visit_Global

        def visit_ExceptHandler(self, node, in_class):
            if node.name:
                self.name(node, node.name)
            return self.generic(node)

        def visit_Import(self, node, in_class):
            out = []
            for alias in node.names:
                self.name(node, alias.name, "module")
                bound = alias.asname or alias.name.partition(".")[0]
                self.name(node, bound)
                load = self.call("__nw_import__", node, self.const(alias.name, node), self.const(alias.asname is None, node))
                target = copy_location(_ast.Name(id=bound, ctx=_ast.Store()), node)
                out.append(copy_location(_ast.Assign(targets=[target], value=load), node))
            return out

        def visit_ImportFrom(self, node, in_class):
            if node.module == "__future__":
                return node
            if node.level:
                self.problem(node, f"relative import of {node.module or '.'!r}", "import modules by their full name")
                return node
            out = []
            for alias in node.names:
                if alias.name == "*":
                    self.problem(node, f"from {node.module} import *", "import the names you use")
                    continue
                self.name(node, node.module, "module")
                bound = alias.asname or alias.name
                self.name(node, bound)
                load = self.call("__nw_from__", node, self.const(node.module, node), self.const(alias.name, node))
                target = copy_location(_ast.Name(id=bound, ctx=_ast.Store()), node)
                out.append(copy_location(_ast.Assign(targets=[target], value=load), node))
            return out

        def visit_MatchClass(self, node, in_class):
            cls = node.cls
            plain_types = {"int", "float", "complex", "str", "bytes", "bool", "list", "tuple", "dict", "set", "frozenset", "bytearray"}
            ok = real_isinstance(cls, _ast.Name) and (cls.id in self.classes or cls.id in plain_types)
            if not ok:
                self.problem(node, "a class pattern of a class not defined in this code", "match against your own classes")
            for attr in node.kwd_attrs:
                if attr.startswith("_") or attr in internals:
                    self.problem(node, f"the attribute {attr!r} in a class pattern")
            node.patterns = self.visit_list(node.patterns)
            node.kwd_patterns = self.visit_list(node.kwd_patterns)
            return node

        def visit_MatchAs(self, node, in_class):
            if node.name:
                self.name(node, node.name)
            return self.generic(node)

        def visit_MatchStar(self, node, in_class):
            if node.name:
                self.name(node, node.name)
            return node

        def visit_MatchMapping(self, node, in_class):
            if node.rest:
                self.name(node, node.rest)
            return self.generic(node)

    def copy_location(new, old):
        for a in ("lineno", "col_offset", "end_lineno", "end_col_offset"):
            value = real_getattr(old, a, None)
            if value is not None:
                real_setattr(new, a, value)
        return new

    def fill_locations(tree):
        todo = [(tree, 1, 0)]
        while todo:
            node, line, col = todo.pop()
            if "lineno" in node._attributes:
                if real_getattr(node, "lineno", None) is None:
                    node.lineno, node.col_offset = line, col
                if real_getattr(node, "end_lineno", None) is None:
                    node.end_lineno, node.end_col_offset = node.lineno, node.col_offset
                line, col = node.lineno, node.col_offset
            for field in node._fields:
                value = real_getattr(node, field, None)
                children = value if real_isinstance(value, list) else [value]
                todo.extend((c, line, col) for c in children if real_isinstance(c, _ast.AST))

    def checked(source, filename):
        """The user's code, checked and rewritten, compiled; or the list of
        what it may not do."""
        tree = compile(source, filename, "exec", _ast.PyCF_ONLY_AST)
        rewriter = Rewriter()
        # Classes defined anywhere in the code may be matched against.
        rewriter.classes = {n.name for n in walk(tree) if real_isinstance(n, _ast.ClassDef)}
        tree.body = rewriter.visit_list(tree.body)
        if rewriter.problems:
            return None, rewriter.problems
        fill_locations(tree)
        return compile(tree, filename, "exec", dont_inherit=True), []

    # --- the second layer: the audit hook -----------------------------------
    blocked_prefixes = (
        "subprocess.", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
        "pty.", "ctypes.", "socket.", "sys.remote_exec", "cpython.run_", "os.add_dll_directory",
        "os.startfile", "webbrowser.", "urllib.", "ftplib.", "smtplib.", "http.", "_xxsubinterpreters.",
        "cpython.PyInterpreterState_New", "code.__new__", "sys.settrace", "sys.setprofile",
        "sys._current_frames",
    )
    cwd = [posix.getcwd()]
    write_flags = posix.O_WRONLY | posix.O_RDWR | posix.O_CREAT | posix.O_TRUNC | posix.O_APPEND
    # Events whose first argument (or first two) are paths written to.
    # Events and which of their arguments are paths written to.
    writing_events = {
        "os.remove": (0,), "os.rmdir": (0,), "os.mkdir": (0,), "os.rename": (0, 1), "os.link": (1,),
        "os.symlink": (1,), "os.truncate": (0,), "os.chmod": (0,), "os.chown": (0,), "os.utime": (0,),
        "os.chflags": (0,), "os.lchmod": (0,), "os.lchown": (0,), "os.setxattr": (0,),
        "os.removexattr": (0,), "os.mkfifo": (0,), "os.mknod": (0,), "shutil.copyfile": (1,),
        "shutil.copymode": (1,), "shutil.copystat": (1,), "shutil.rmtree": (0,), "shutil.move": (0, 1),
        "shutil.chown": (0,), "shutil.make_archive": (0,), "shutil.unpack_archive": (1,),
    }
    reading_events = {"os.listdir": (0,), "os.scandir": (0,), "os.chdir": (0,), "os.getxattr": (0,), "os.listxattr": (0,),
                      "shutil.copyfile": (0,), "os.link": (0,), "shutil.unpack_archive": (0,)}

    def absolute(path):
        if real_isinstance(path, bytes):
            path = path.decode("utf-8", "surrogateescape")
        if not real_isinstance(path, real_str):
            return None
        path = str_of(path)
        if not path.startswith("/"):
            path = cwd[0].rstrip("/") + "/" + path
        parts = []
        for part in path.split("/"):
            if part in ("", "."):
                continue
            if part == "..":
                if parts:
                    parts.pop()
            else:
                parts.append(part)
        return "/" + "/".join(parts)

    def within(path, places):
        return (path.rstrip("/") + "/").startswith(places)

    def check_path(event, path, writing):
        full = absolute(path)
        if full is None:
            return
        if not within(full, writable if writing else readable):
            what = f"opening {full!r}" if event == "open" else f"{event} of {full!r}"
            report(what)
            raise PermissionError(refused(what) + "; the workspace is " + workspace)

    def audit(event, args):
        if event.startswith(blocked_prefixes):
            what = event.split(".")[0] + " (" + event + ")"
            report(what)
            raise PermissionError(refused(what))
        if event == "import":
            module = args[0] if args else ""
            if real_isinstance(module, real_str) and module.partition(".")[0] in denied_modules:
                report(f"import of {module!r}")
                raise ImportError(refused(f"import of {module!r}") + f"; modules you may import: {listing}", name=module)
        elif event == "open":
            path, mode, flags = args[0], args[1], args[2]
            if real_isinstance(path, int):
                if path == report_fd:
                    what = f"opening descriptor {path}"
                    report(what)
                    raise PermissionError(refused(what))
                return
            if mode is not None:
                writing = any(c in real_str(mode) for c in "wax+")
            else:
                writing = bool(flags & write_flags) if real_isinstance(flags, int) else True
            check_path(event, path, writing)
        else:
            for i in reading_events.get(event, ()):
                if i < len(args):
                    check_path(event, args[i], False)
            for i in writing_events.get(event, ()):
                if i < len(args):
                    check_path(event, args[i], True)
            if event == "os.chdir":
                full = absolute(args[0])
                if full is not None:
                    cwd[0] = full

    # --- running the user's code ----------------------------------------------
    def main():
        args = sys.argv[1:]
        if args and args[0] in ("-V", "--version"):
            sys.stdout.write("Python %d.%d.%d\n" % sys.version_info[:3])
            return 0
        if not args or args[0] == "-":
            source, filename, argv = sys.stdin.buffer.read(), "<stdin>", (["-"] + args[1:] if args else [""])
        elif args[0] == "-c":
            if len(args) < 2:
                sys.stderr.write("ninewall guard: -c needs code\n")
                return 2
            source, filename, argv = args[1], "<string>", ["-c"] + args[2:]
        elif args[0].startswith("-"):
            sys.stderr.write(
                f"ninewall guard: the option {args[0]!r} is not taken under the guard (profile {profile!r});"
                " give -c CODE, - (code on stdin) or a script, then its arguments\n"
            )
            return 2
        else:
            try:
                with open(args[0], "rb") as f:
                    source = f.read()
            except OSError as e:
                sys.stderr.write(f"ninewall guard: cannot read {args[0]!r}: {e.strerror}\n")
                return 2
            filename, argv = args[0], args
        user_filename[0] = filename
        try:
            code, problems = checked(source, filename)
        except SyntaxError as e:
            import traceback

            sys.stderr.write("".join(traceback.format_exception_only(SyntaxError, e)))
            return 1
        if problems:
            sys.stderr.write(f"ninewall guard: the code was refused before it ran (profile {profile!r}):\n")
            for line, what, why in problems[:50]:
                report(what, line)
                where = f"line {line}: " if line is not None else ""
                sys.stderr.write(f"  {where}{refused(what)}" + (f" ({why})" if why else "") + "\n")
            if len(problems) > 50:
                sys.stderr.write(f"  ... and {len(problems) - 50} more\n")
            return 1
        sys.meta_path.insert(0, TypingPatcher)
        if "typing" in modules:
            patch_typing(modules["typing"])
        sys.addaudithook(audit)
        sys.path[:] = list(config["path"])
        sys.argv = argv
        main_module = ModuleType("__main__")
        namespace = main_module.__dict__
        namespace.update({"__builtins__": safe_builtins, "__file__": filename})
        guard_module = modules["__main__"]  # noqa: F841 (kept alive with its globals)
        modules["__main__"] = main_module
        try:
            exec(code, namespace)
        except SystemExit:
            raise
        except BaseException as e:
            import traceback

            # The user's traceback, without the guard's own frames.
            frames = [f for f in traceback.extract_tb(e.__traceback__) if f.filename != own_file]
            sys.stderr.write(
                "Traceback (most recent call last):\n"
                + "".join(traceback.format_list(frames))
                + "".join(traceback.format_exception_only(real_type(e), e))
            )
            return 1
        return 0

    return main


raise SystemExit(_guard(_config())())
