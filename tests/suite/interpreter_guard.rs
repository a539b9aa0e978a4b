//! Wall 2 with model-style code: what the whitelist allows works, what it
//! forbids fails with a clear error, and each known bypass fails — at the guard
//! or at a kernel wall, and the test says which.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::support::*;

#[test]
fn allowed_modules_compute_and_forbidden_imports_are_named() {
    for who in identities() {
        let r = python(
            who,
            &profile("code_generate_new"),
            "import json, statistics, csv, io, math, re, datetime, collections, decimal, fractions, random, dataclasses\n\
             rows = [[\"q\", \"revenue\"], [\"Q1\", 10], [\"Q2\", 14]]\n\
             buf = io.StringIO(); csv.writer(buf).writerows(rows)\n\
             print(json.dumps({\"mean\": statistics.mean([10, 14]), \"csv\": buf.getvalue(), \"sqrt\": math.sqrt(16)}))",
        );
        r.assert_code(0);
        assert_eq!(
            r.json(),
            serde_json::json!({"mean": 12, "csv": "q,revenue\r\nQ1,10\r\nQ2,14\r\n", "sqrt": 4.0})
        );
        for module in [
            "os",
            "subprocess",
            "sys",
            "ctypes",
            "socket",
            "importlib",
            "base64",
            "pickle",
        ] {
            let r = python(who, &profile("code_generate_new"), &format!("import {module}"));
            r.assert_code(1);
            assert!(
                r.stderr.contains(&format!(
                    "ImportError: import of '{module}' is not allowed by profile 'code_generate_new'; modules you may import: collections, csv"
                )),
                "{who:?}: {module}: {r:#?}"
            );
            assert!(
                !r.stderr.contains("guard.py"),
                "the guard's own frames are hidden: {}",
                r.stderr
            );
        }
    }
}

/// The shipped `code_generate_new` without its `[python]` section: the same
/// interpreter, flags and kernel walls, and no guard. What gets past the guard
/// meets exactly these walls.
fn unguarded_profile() -> std::path::PathBuf {
    let text = std::fs::read_to_string(profile("code_generate_new")).unwrap();
    let mut out = String::new();
    let mut in_python = false;
    for line in text.lines() {
        if line.starts_with('[') {
            in_python = line.trim() == "[python]";
        }
        if !in_python {
            out.push_str(&line.replace("name = \"code_generate_new\"", "name = \"code_generate_new_unguarded\""));
            out.push('\n');
        }
    }
    assert!(!out.contains("[python]") && out.contains("code_generate_new_unguarded"));
    write_profile("code_generate_new_unguarded", &out)
}

/// What an escape is after, and how the kernel refuses it when no guard is
/// there: (wall, what Python says).
#[derive(Clone, Copy, Debug)]
enum Goal {
    /// Read a host file that is not in the sandbox's view.
    ReadSecret,
    /// Write beside the interpreter's standard library.
    WriteOutside,
    /// Open a socket.
    Socket,
    /// Start a second process.
    Fork,
    /// Map code written to the workspace.
    MapCode,
}

impl Goal {
    fn kernel_refusals(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Goal::ReadSecret => &[("wall 4 (mount view)", "FileNotFoundError")],
            Goal::WriteOutside => &[
                ("wall 4 (mount view, read-only)", "[Errno 30] Read-only file system"),
                ("wall 7 (Landlock)", "[Errno 13] Permission denied"),
            ],
            Goal::Socket | Goal::Fork => &[("wall 8 (seccomp)", "[Errno 1] Operation not permitted")],
            Goal::MapCode => &[(
                "wall 7 (Landlock, no execute in the workspace)",
                "failed to map segment from shared object",
            )],
        }
    }
}

/// The bypass corpus: (name, code, what the guard's refusal names, goal).
/// `SECRET` in the code is a host file's path, as a Python string literal;
/// `EVIL` a path beside the standard library. Each technique works in plain
/// Python (the unguarded run reaches its goal and the kernel refuses it).
const CORPUS: &[(&str, &str, &str, Goal)] = &[
    ("module-private-sys", "import collections\np = collections._sys.modules['posix']\nprint(p.read(p.open(SECRET, 0), 99))", "private attribute '_sys' of module 'collections'", Goal::ReadSecret),
    ("exec-as-library-code", "import json\nexec(compile('import posix; print(posix.read(posix.open(' + repr(SECRET) + ', 0), 99))', json.__file__, 'exec'), json.__dict__)", "the attribute '__file__'", Goal::ReadSecret),
    ("original-import-from-closure", "imp = getattr(__import__, '__closure__', None) or __import__\np = imp('posix')\nprint(p.read(p.open(SECRET, 0), 99))", "the name '__import__'", Goal::ReadSecret),
    ("builtins-isinstance-replaced", "import builtins\nbuiltins.isinstance = lambda *a: False\nprint(open(SECRET).read())", "import of 'builtins'", Goal::ReadSecret),
    ("os-open-write-flags", "import random\nos = random._os\nos.write(os.open(EVIL, os.O_WRONLY | os.O_CREAT), b'x')", "private attribute '_os' of module 'random'", Goal::WriteOutside),
    ("loader-globals", "import json\ng = json.__loader__.get_data.__globals__\nprint(g['_os'].read(g['_os'].open(SECRET, 0), 99))", "the attribute '__loader__'", Goal::ReadSecret),
    ("subclasses-walk", "B = [c for c in ().__class__.__base__.__subclasses__() if c.__name__ == 'BuiltinImporter'][0]\np = B.load_module('posix')\nprint(p.read(p.open(SECRET, 0), 99))", "the attribute '__base__'", Goal::ReadSecret),
    ("sub-interpreter", "import _xxsubinterpreters as i\ni.run_string(i.create(), 'print(open(' + repr(SECRET) + ').read())')", "import of '_xxsubinterpreters'", Goal::ReadSecret),
    ("format-walk-globals", "import random\nleak = '{0.__init__.__globals__}'.format(random.Random)\nprint(open(SECRET).read())", "attribute '__globals__'", Goal::ReadSecret),
    ("format-map-walk", "leak = '{x.__class__.__mro__}'.format_map({'x': 1})\nprint(open(SECRET).read())", "attribute '__mro__'", Goal::ReadSecret),
    ("format-spec-nesting", "try:\n    leak = '{0:{1.__class__.__base__}}'.format(1, 2)\nexcept ValueError:\n    pass\nprint(open(SECRET).read())", "attribute '__base__'", Goal::ReadSecret),
    ("string-formatter-walk", "import string\nleak = string.Formatter().vformat('{0.__globals__}', [lambda: 0], {})\nprint(open(SECRET).read())", "attribute '__globals__'", Goal::ReadSecret),
    ("generator-frame", "def g():\n    yield 1\nb = g().gi_frame.f_globals['__builtins__']\nprint(b.open(SECRET).read())", "attribute 'gi_frame' of a 'generator' object", Goal::ReadSecret),
    ("coroutine-frame", "async def c():\n    pass\nx = c()\nb = x.cr_frame.f_builtins\nprint(b['open'](SECRET).read())", "attribute 'cr_frame' of a 'coroutine' object", Goal::ReadSecret),
    ("traceback-frame", "try:\n    1 / 0\nexcept Exception as e:\n    f = e.__traceback__.tb_frame\nprint(f.f_builtins['open'](SECRET).read())", "the attribute '__traceback__'", Goal::ReadSecret),
    ("pickle-reduce-payload", "import pickle\nprint(pickle.loads(b'cposix\\nopen\\n(S' + repr(SECRET).encode() + b'\\nI0\\ntR.'))", "import of 'pickle'", Goal::ReadSecret),
    ("reduce-method", "class A:\n    def __reduce__(self):\n        return (open, (SECRET,))\nimport copy\nprint(copy.copy(A()).read())", "the function name '__reduce__'", Goal::ReadSecret),
    ("codecs-rot13-exec", "import codecs\nexec(codecs.decode('vzcbeg cbfvk; cevag(cbfvk.ernq(cbfvk.bcra(', 'rot13') + repr(SECRET) + ', 0), 99))')", "import of 'codecs'", Goal::ReadSecret),
    ("type-with-crafted-dict", "T = type('T', (), {'__getattribute__': lambda self, name: open})\nprint(T().anything(SECRET).read())", "opening", Goal::ReadSecret),
    ("decorator-exec", "@exec\n@lambda _: 'print(open(' + repr(SECRET) + ').read())'\nclass X:\n    pass", "exec()", Goal::ReadSecret),
    ("match-class-pattern", "import random\nmatch random:\n    case object(_os=o):\n        print(o.read(o.open(SECRET, 0), 99))", "a class pattern of a class not defined in this code", Goal::ReadSecret),
    ("fstring-nested-import", "x = f\"{1:{__import__('posix').open(SECRET, 0)}}\"", "the name '__import__'", Goal::ReadSecret),
    ("debugger-runcall", "import pdb\npdb.Pdb().runcall(open, SECRET)", "import of 'pdb'", Goal::ReadSecret),
    ("getattr-dunder-string", "t = getattr(getattr((), '__class__'), '__base__')\nprint(open(SECRET).read())", "attribute '__base__'", Goal::ReadSecret),
    ("vars-of-module", "import random\no = vars(random)['_os']\nprint(o.read(o.open(SECRET, 0), 99))", "vars() of module 'random'", Goal::ReadSecret),
    ("globals-builtins", "b = globals()['__builtins__']\nprint(b.open(SECRET).read())", "globals()", Goal::ReadSecret),
    ("module-reached-through-another", "import datetime\np = datetime.sys.modules['posix']\nprint(p.read(p.open(SECRET, 0), 99))", "module 'sys' (as datetime.sys)", Goal::ReadSecret),
    ("from-import-of-builtins", "from dataclasses import builtins as b\nprint(b.open(SECRET).read())", "module 'builtins' (as dataclasses.builtins)", Goal::ReadSecret),
    ("string-annotation-eval", "import typing\nexec('def f(x: \"__import__(\\'posix\\').open(' + repr(SECRET) + ', 0)\"): pass', globals())\ntyping.get_type_hints(f)", "globals()", Goal::ReadSecret),
    ("annotation-evaluated-by-typing", "import typing\ndef f(x: \"print(open(SECRET).read())\"):\n    pass\ntyping.get_type_hints(f)", "the string annotation", Goal::ReadSecret),
    ("function-type-gadget", "import dataclasses\nF = dataclasses.FunctionType\nF(compile('print(open(' + repr(SECRET) + ').read())', 'x', 'exec'), {})()", "dataclasses.FunctionType", Goal::ReadSecret),
    ("super-with-arguments", "import string\nclass F(string.Formatter):\n    pass\ng = super(F, F()).get_field('0.__init__.__globals__', [string.Template], {})\nprint(open(SECRET).read())", "super() with arguments", Goal::ReadSecret),
    ("mro-to-original-class", "import string\nbase = string.Formatter.mro()[0]\nprint(open(SECRET).read())", "attribute 'mro' of class 'Formatter'", Goal::ReadSecret),
    ("operator-attrgetter", "import operator\nt = operator.attrgetter('__class__.__base__')(())\nprint(open(SECRET).read())", "import of 'operator'", Goal::ReadSecret),
    ("execv-second-interpreter", "import random\nrandom._os.execv('/usr/bin/python3.11', ['python3.11', '-c', 'print(open(' + repr(SECRET) + ').read())'])", "private attribute '_os' of module 'random'", Goal::ReadSecret),
    ("code-interact", "import code\ncode.InteractiveInterpreter().runsource('print(open(' + repr(SECRET) + ').read())')\nraise SystemExit(3)", "import of 'code'", Goal::ReadSecret),
    ("io-open-write", "import io\nio.open(EVIL, 'w').write('x')", "opening", Goal::WriteOutside),
    ("fileio-read", "import io\nprint(io.FileIO(SECRET).read())", "opening", Goal::ReadSecret),
    ("socket", "import _socket\n_socket.socket().connect(('127.0.0.1', 1))", "import of '_socket'", Goal::Socket),
    ("fork", "import random\nrandom._os.fork()", "private attribute '_os' of module 'random'", Goal::Fork),
    ("builtins-name", "print(__builtins__.open(SECRET).read())", "the name '__builtins__'", Goal::ReadSecret),
    ("type-subclasses", "c = type.__subclasses__(object)\nprint(open(SECRET).read())", "the attribute '__subclasses__'", Goal::ReadSecret),
    ("lambda-default-walk", "f = (lambda x=().__class__.__bases__: x)\nprint(open(SECRET).read())", "the attribute '__bases__'", Goal::ReadSecret),
    ("math-letters-normalized", "print(__\u{1d41b}uiltins__.open(SECRET).read())", "the name '__builtins__'", Goal::ReadSecret),
    ("str-subclass-name", "class S(str):\n    def startswith(self, *a):\n        return False\nt = getattr(getattr((), '__class__'), S('__base__'))\nprint(open(SECRET).read())", "attribute '__base__'", Goal::ReadSecret),
    ("metaclass-hands-back-a-library-class", "import json\nclass X(metaclass=lambda *a: json.JSONEncoder):\n    pass\nX.default = lambda self, o: o\nprint(open(SECRET).read())", "changing class 'JSONEncoder'", Goal::ReadSecret),
    ("class-assignment", "class A:\n    pass\na = A()\na.__class__ = type('B', (), {})\nprint(open(SECRET).read())", "the attribute '__class__'", Goal::ReadSecret),
    (
        "extension-from-workspace",
        "data = open('/usr/lib/python3.11/lib-dynload/_json.cpython-311-x86_64-linux-gnu.so', 'rb').read()\nopen('/work/evil.so', 'wb').write(data)\nL = [c for c in object.__subclasses__() if c.__name__ == 'FileLoader'][0].__subclasses__()\nE = [c for c in L if c.__name__ == 'ExtensionFileLoader'][0]\nE('_json', '/work/evil.so').load_module('_json')",
        "the attribute '__subclasses__'",
        Goal::MapCode,
    ),
];

#[test]
fn every_bypass_is_refused_by_the_guard_and_without_it_by_a_named_kernel_wall() {
    assert!(
        CORPUS.len() >= 32,
        "the corpus is the issue's seven and at least 25 more"
    );
    let secret = exec_dir().join(format!("guard-secret-{}", unique()));
    let marker = format!("nw-guard-secret-{}", unique());
    std::fs::write(&secret, &marker).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let evil = format!("/usr/lib/python3.11/nw-evil-{}.py", unique());
    let unguarded = unguarded_profile();
    let prelude = format!("SECRET = {:?}\nEVIL = {:?}\n", secret.to_str().unwrap(), evil);
    for who in identities() {
        let mut failures = Vec::new();
        for (name, code, says, goal) in CORPUS {
            let code = format!("{prelude}{code}");
            let guarded = python(who, &profile("code_generate_new"), &code);
            if guarded.code == 0
                || !guarded.stderr.contains("is not allowed by profile 'code_generate_new'")
                || !guarded.stderr.contains(says)
                || guarded.stdout.contains(&marker)
            {
                failures.push(format!(
                    "{name}: the guard did not refuse it with {says:?}: exit {}\n{}{}",
                    guarded.code, guarded.stdout, guarded.stderr
                ));
            }
            let bare = python(who, &unguarded, &code);
            let stopped = goal
                .kernel_refusals()
                .iter()
                .find(|(_, says)| bare.stderr.contains(says) || bare.stdout.contains(says));
            if bare.code == 0
                || stopped.is_none()
                || bare.stdout.contains(&marker)
                || bare.stderr.contains("is not allowed by profile")
            {
                failures.push(format!(
                    "{name}: without the guard, not stopped by {:?}: exit {}\n{}{}",
                    goal.kernel_refusals(),
                    bare.code,
                    bare.stdout,
                    bare.stderr
                ));
            }
        }
        assert!(
            !Path::new(&evil).exists(),
            "a sandbox wrote beside the host's standard library"
        );
        assert!(failures.is_empty(), "{who:?}:\n{}", failures.join("\n\n"));
    }
    let _ = std::fs::remove_file(&secret);
}

#[test]
fn only_listed_packages_exist_for_the_sandbox() {
    let site = exec_dir().join(format!("site-{}", unique()));
    for (pkg, value) in [("good", "1"), ("bad", "2")] {
        std::fs::create_dir_all(site.join(pkg)).unwrap();
        std::fs::write(site.join(pkg).join("__init__.py"), format!("VALUE = {value}\n")).unwrap();
        std::fs::set_permissions(site.join(pkg), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(
            site.join(pkg).join("__init__.py"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
    }
    std::fs::set_permissions(&site, std::fs::Permissions::from_mode(0o755)).unwrap();
    let p = write_profile(
        &format!("packages-{}", unique()),
        &format!(
            "extends = \"code_generate_new\"\n[mbu]\nname = \"packages\"\n[python]\nmodules = [\"good\", \"bad\"]\npackages = [\"good\"]\nsite_packages = [{:?}]\n",
            site.to_str().unwrap()
        ),
    );
    let bad_file = site.join("bad").join("__init__.py");
    for who in identities() {
        let r = python(who, &p, "import good; print(good.VALUE)");
        r.assert_code(0);
        assert_eq!(r.stdout.trim(), "1");
        // Allowed by name, absent from the view: the kernel-level package wall.
        let r = python(who, &p, "import bad");
        r.assert_code(1);
        assert!(
            r.stderr.contains("ModuleNotFoundError: No module named 'bad'"),
            "{who:?}: {r:#?}"
        );
        let r = python(who, &p, &format!("open({:?}).read()", bad_file.to_str().unwrap()));
        r.assert_code(1);
        assert!(
            r.stderr.contains("is not allowed by profile 'packages'"),
            "{who:?}: {r:#?}"
        );
    }
}

#[test]
fn code_generate_new_has_one_process_and_no_network_whatever_the_guard_does() {
    for who in identities() {
        let r = run(who, &profile("code_generate_new"), &["-v"], &["-c", "print(1)"], None);
        r.assert_code(0);
        assert!(
            r.stderr.contains("wall 2 interpreter guard: /.ninewall/guard.py"),
            "{r:#?}"
        );
        assert!(
            r.stderr.contains("checks and rewrites the user's code before it runs"),
            "{r:#?}"
        );
        assert!(
            r.stderr.contains("wall 6 network: network namespace, no interface up")
                != r.stderr
                    .contains("wall 6 network: no network namespace of its own: the shared empty one"),
            "{}",
            r.stderr
        );
        let line = r
            .stderr
            .lines()
            .find(|l| l.contains("wall 8 seccomp"))
            .unwrap_or_default()
            .to_string();
        let list = r
            .stderr
            .lines()
            .skip_while(|l| !l.contains("wall 8 seccomp"))
            .nth(1)
            .unwrap_or_default();
        assert!(
            !list
                .split_whitespace()
                .any(|s| s == "clone" || s == "fork" || s == "socket"),
            "{line}\n{list}"
        );
    }
}

/// Model-written code of the everyday kind: the guard must not change what
/// it prints.
const ORDINARY: &[(&str, &str)] = &[
    ("statistics", "import statistics\nxs = [2.5, 3.1, 4.7, 1.2, 9.9, 3.3]\nprint(statistics.mean(xs), statistics.median(xs), round(statistics.stdev(xs), 6))\nprint(statistics.quantiles(xs, n=4))"),
    ("json-roundtrip", "import json\nd = {'name': 'widget', 'tags': ['a', 'b'], 'price': 9.5, 'stock': None}\ns = json.dumps(d, sort_keys=True, indent=2)\nprint(s)\nprint(json.loads(s) == d)"),
    ("csv-report", "import csv, io\nrows = [{'q': 'Q1', 'rev': 10}, {'q': 'Q2', 'rev': 14}]\nbuf = io.StringIO()\nw = csv.DictWriter(buf, fieldnames=['q', 'rev'])\nw.writeheader()\nw.writerows(rows)\nprint(buf.getvalue())\nfor r in csv.DictReader(io.StringIO(buf.getvalue())):\n    print(r['q'], int(r['rev']) * 2)"),
    ("regex-extract", "import re\ntext = 'Contact: alice@example.com, bob@test.org; phone 555-1234'\nprint(re.findall(r'[\\w.]+@[\\w.]+', text))\nm = re.search(r'(\\d{3})-(\\d{4})', text)\nprint(m.group(0), m.groups(), m.start())\nprint(re.sub(r'\\s+', ' ', 'a   b\\t\\tc'))"),
    ("datetime-math", "from datetime import datetime, timedelta, date\nd = datetime(2024, 3, 15, 10, 30)\nprint(d + timedelta(days=20), (date(2024, 12, 25) - date(2024, 1, 1)).days)\nprint(d.strftime('%Y-%m-%d %H:%M'), d.isoformat(), d.weekday())"),
    ("dataclass-inventory", "from dataclasses import dataclass, field, asdict\n@dataclass\nclass Item:\n    name: str\n    qty: int = 0\n    tags: list = field(default_factory=list)\n    def total(self, price):\n        return self.qty * price\nitems = [Item('a', 2), Item('b', 5, ['x'])]\nprint([asdict(i) for i in items], sum(i.total(1.5) for i in items))\nprint(items[0] == Item('a', 2), items[0])"),
    ("math-geometry", "import math\npts = [(0, 0), (3, 4), (6, 8)]\nd = [math.dist(pts[i], pts[i + 1]) for i in range(len(pts) - 1)]\nprint(d, math.hypot(3, 4), round(math.pi * 2 ** 2, 4), math.gcd(48, 18), math.comb(10, 3))"),
    ("comprehensions", "matrix = [[i * j for j in range(1, 5)] for i in range(1, 5)]\nprint(matrix)\nprint([list(r) for r in zip(*matrix)])\nprint({k: v for k, v in enumerate('abc')}, {x % 3 for x in range(10)})\nprint(sum(x for row in matrix for x in row if x % 2 == 0))"),
    ("classes-methods", "class Account:\n    rate = 0.01\n    def __init__(self, owner, balance=0):\n        self.owner = owner\n        self._balance = balance\n    @property\n    def balance(self):\n        return self._balance\n    def deposit(self, x):\n        if x <= 0:\n            raise ValueError('positive only')\n        self._balance += x\n        return self\n    @classmethod\n    def empty(cls, owner):\n        return cls(owner)\n    @staticmethod\n    def fee(x):\n        return round(x * 0.02, 2)\n    def __repr__(self):\n        return f'Account({self.owner!r}, {self._balance})'\na = Account.empty('ann').deposit(100).deposit(50)\nprint(a, a.balance, Account.fee(a.balance))\ntry:\n    a.deposit(-1)\nexcept ValueError as e:\n    print('error:', e)"),
    ("inheritance-super", "class Shape:\n    def __init__(self, name):\n        self.name = name\n    def area(self):\n        return 0\n    def __str__(self):\n        return f'{self.name}: {self.area():.2f}'\nclass Rect(Shape):\n    def __init__(self, w, h):\n        super().__init__('rect')\n        self.w, self.h = w, h\n    def area(self):\n        return self.w * self.h\nclass Square(Rect):\n    def __init__(self, s):\n        super().__init__(s, s)\n        self.name = 'square'\nfor s in [Shape('blob'), Rect(2, 3), Square(4)]:\n    print(s, isinstance(s, Rect), type(s).__name__)"),
    ("string-formatting", "name, n, ratio = 'report', 42, 0.12345\nprint(f'{name:>10}|{n:05d}|{ratio:.2%}|{n:x}|{n!r}')\nprint('{} has {} items'.format(name, n), '{0}-{0}'.format('x'), '{k}={v}'.format(k='a', v=1))\nprint('%s: %d (%.1f)' % (name, n, ratio * 100))\nprint('{:,}'.format(1234567), '{:^9}'.format('mid'))"),
    ("collections-counter", "from collections import Counter, defaultdict, OrderedDict, deque, namedtuple\nwords = 'the cat and the hat and the bat'.split()\nc = Counter(words)\nprint(c.most_common(2), c['the'])\ng = defaultdict(list)\nfor w in words:\n    g[len(w)].append(w)\nprint(dict(g))\nq = deque(range(5), maxlen=3)\nq.append(9)\nprint(list(q))\nP = namedtuple('P', 'x y')\np = P(1, 2)\nprint(p, p.x + p.y, p._replace(x=5), P._fields)"),
    ("itertools-combos", "import itertools\nprint(list(itertools.combinations('abcd', 2)))\nprint(list(itertools.accumulate([1, 2, 3, 4])))\nprint([(k, len(list(g))) for k, g in itertools.groupby('aaabbc')])\nprint(list(itertools.islice(itertools.cycle('xy'), 5)), list(itertools.product([0, 1], repeat=2)))"),
    ("functools-tools", "import functools\n@functools.lru_cache(maxsize=None)\ndef fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\nprint(fib(60), functools.reduce(lambda a, b: a * b, range(1, 8)))\nadd3 = functools.partial(lambda a, b, c: a + b + c, 1, 2)\nprint(add3(10))\n@functools.total_ordering\nclass V:\n    def __init__(self, v):\n        self.v = v\n    def __eq__(self, o):\n        return self.v == o.v\n    def __lt__(self, o):\n        return self.v < o.v\nprint(V(1) <= V(2), sorted([V(3), V(1)])[0].v)"),
    ("decimal-money", "from decimal import Decimal, ROUND_HALF_UP, getcontext\nprices = [Decimal('19.99'), Decimal('5.01'), Decimal('0.10')]\ntotal = sum(prices)\nprint(total, (total * Decimal('1.0825')).quantize(Decimal('0.01'), rounding=ROUND_HALF_UP))\ngetcontext().prec = 6\nprint(Decimal(1) / Decimal(7))"),
    ("fractions", "from fractions import Fraction\nf = Fraction(3, 4) + Fraction(5, 6)\nprint(f, float(f), f.numerator, f.limit_denominator(10), Fraction('0.125'))"),
    ("random-seeded", "import random\nrandom.seed(7)\nprint([random.randint(1, 100) for _ in range(5)], random.choice('abcdef'))\nr = random.Random(3)\nxs = list(range(10))\nr.shuffle(xs)\nprint(xs, round(r.uniform(0, 1), 6), r.sample(range(100), 3))"),
    ("enum-states", "from enum import Enum, auto, IntEnum\nclass State(Enum):\n    NEW = auto()\n    DONE = auto()\nclass Pri(IntEnum):\n    LOW = 1\n    HIGH = 3\nprint(State.NEW, State.DONE.value, State['NEW'], [s.name for s in State], Pri.HIGH > Pri.LOW, Pri(1))"),
    ("typing-annotations", "from typing import List, Dict, Optional, Tuple, NamedTuple\nclass Pt(NamedTuple):\n    x: int\n    y: int = 0\ndef summarize(xs: List[int], label: Optional[str] = None) -> Dict[str, float]:\n    return {'label': label or 'n/a', 'mean': sum(xs) / len(xs)}\ndef pair() -> Tuple[int, str]:\n    return 1, 'a'\nprint(summarize([1, 2, 3]), pair(), Pt(1), Pt(2, 3).y)"),
    ("textwrap-string", "import textwrap, string\ns = 'The quick brown fox jumps over the lazy dog. ' * 3\nprint(textwrap.fill(s, width=30))\nprint(textwrap.shorten(s, width=40), textwrap.dedent('  a\\n  b'))\nprint(string.ascii_lowercase[:5], string.Template('$who likes $what').substitute(who='tim', what='pie'), string.capwords('hello world'))"),
    ("generators", "def chunks(xs, n):\n    for i in range(0, len(xs), n):\n        yield xs[i:i + n]\ndef fib():\n    a, b = 0, 1\n    while True:\n        yield a\n        a, b = b, a + b\ng = fib()\nprint([next(g) for _ in range(10)], list(chunks(list(range(7)), 3)))\nprint(sum(x * x for x in range(100)))"),
    ("exceptions", "class AppError(Exception):\n    def __init__(self, code, msg):\n        super().__init__(msg)\n        self.code = code\ndef risky(x):\n    if x < 0:\n        raise AppError(400, 'negative')\n    return 1 / x\nfor v in [2, 0, -1]:\n    try:\n        print(risky(v))\n    except ZeroDivisionError as e:\n        print('zero:', e)\n    except AppError as e:\n        print('app:', e.code, e)\n    finally:\n        print('done', v)"),
    ("sorting-keys", "people = [('ann', 31, 'nyc'), ('bob', 25, 'sf'), ('cy', 31, 'la')]\nprint(sorted(people, key=lambda p: (-p[1], p[0])))\nprint(max(people, key=lambda p: p[1])[0], min(p[1] for p in people))\nprint(sorted({'b': 2, 'a': 3}.items(), key=lambda kv: kv[1], reverse=True))"),
    ("word-frequency", "text = '''It was the best of times, it was the worst of times.'''\nimport re\nfrom collections import Counter\nwords = re.findall(r'[a-z]+', text.lower())\nfreq = Counter(words)\nfor word, n in sorted(freq.items(), key=lambda x: (-x[1], x[0]))[:4]:\n    print(f'{word:<6} {n}')"),
    ("matrix-ops", "def matmul(a, b):\n    return [[sum(x * y for x, y in zip(row, col)) for col in zip(*b)] for row in a]\ndef transpose(m):\n    return [list(r) for r in zip(*m)]\na = [[1, 2], [3, 4]]\nb = [[5, 6], [7, 8]]\nprint(matmul(a, b), transpose(a), [[a[i][j] + b[i][j] for j in range(2)] for i in range(2)])"),
    ("main-guard", "def main():\n    data = [5, 3, 8, 1]\n    data.sort()\n    print('sorted', data)\n    return 0\nif __name__ == '__main__':\n    main()"),
    ("dict-merging", "a = {'x': 1, 'y': {'z': 2}}\nb = {'y': {'w': 3}, 'v': 4}\ndef merge(d1, d2):\n    out = dict(d1)\n    for k, v in d2.items():\n        if isinstance(v, dict) and isinstance(out.get(k), dict):\n            out[k] = merge(out[k], v)\n        else:\n            out[k] = v\n    return out\nprint(merge(a, b), a | {'q': 0}, {**a, 'x': 9})"),
    ("walrus-match", "import re\nfor line in ['cmd: go 3', 'cmd: stop', 'noise']:\n    if (m := re.match(r'cmd: (\\w+)(?: (\\d+))?', line)):\n        match m.groups():\n            case ('go', n):\n                print('go', int(n))\n            case ('stop', None):\n                print('stop')\n    else:\n        print('skip', line)"),
    ("match-own-classes", "from dataclasses import dataclass\n@dataclass\nclass Point:\n    x: int\n    y: int\ndef where(p):\n    match p:\n        case Point(x=0, y=0):\n            return 'origin'\n        case Point(x=0, y=y):\n            return f'on y at {y}'\n        case Point(x, y) if x == y:\n            return 'diagonal'\n        case _:\n            return 'elsewhere'\nprint([where(p) for p in [Point(0, 0), Point(0, 5), Point(2, 2), Point(1, 3)]])"),
    ("workspace-files", "import json\nwith open('/work/data.json', 'w') as f:\n    json.dump({'rows': [1, 2, 3]}, f)\nwith open('/work/data.json') as f:\n    d = json.load(f)\nwith open('/work/out.txt', 'a') as f:\n    f.write('total %d\\n' % sum(d['rows']))\nprint(open('/work/out.txt').read().strip())"),
    ("getattr-public", "class Cfg:\n    debug = False\n    level = 3\nc = Cfg()\nfor k in ['debug', 'level', 'missing']:\n    print(k, getattr(c, k, 'n/a'), hasattr(c, k))\nsetattr(c, 'level', 4)\nprint(c.level, vars(c), sorted(k for k in dir(c) if not k.startswith('_')))"),
    ("json-custom-encoder", "import json, datetime\nclass Enc(json.JSONEncoder):\n    def default(self, o):\n        if isinstance(o, datetime.date):\n            return o.isoformat()\n        return super().default(o)\nprint(json.dumps({'d': datetime.date(2024, 1, 2), 'n': [1, 2]}, cls=Enc))"),
    ("lambda-closures", "def counter():\n    n = 0\n    def inc(step=1):\n        nonlocal n\n        n += step\n        return n\n    return inc\nc = counter()\nc(); c(5)\nprint(c(), list(map(lambda x: x ** 2, range(5))), list(filter(None, [0, 1, '', 'a'])))"),
];

#[test]
fn ordinary_model_code_prints_what_it_prints_without_the_guard() {
    assert!(ORDINARY.len() >= 30);
    let unguarded = unguarded_profile();
    let who = identities().into_iter().next().unwrap();
    let mut differ = Vec::new();
    for (name, code) in ORDINARY {
        let guarded = python(who, &profile("code_generate_new"), code);
        let bare = python(who, &unguarded, code);
        if guarded.code != 0 || bare.code != 0 || guarded.stdout != bare.stdout || guarded.stdout.is_empty() {
            differ.push(format!(
                "{name}: guarded exit {} / unguarded exit {}\n--- guarded\n{}{}\n--- unguarded\n{}{}",
                guarded.code, bare.code, guarded.stdout, guarded.stderr, bare.stdout, bare.stderr
            ));
        }
    }
    assert!(differ.is_empty(), "{}", differ.join("\n\n"));
}

#[test]
fn the_guards_refusals_are_provenance_and_user_code_cannot_forge_them() {
    for who in identities() {
        let dir = scratch_dir("guard-records");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let log = dir.join("audit.jsonl");
        let code = "import json\n\
                    print('{\"what\": \"forged on stdout\", \"line\": 1}')\n\
                    try:\n    import os\nexcept ImportError:\n    pass\n\
                    for _ in range(3):\n    try:\n        open('/etc/shadow')\n    except PermissionError:\n        pass\n\
                    import collections\n\
                    collections._sys";
        let r = run(
            who,
            &profile("code_generate_new"),
            &["--audit-log", log.to_str().unwrap()],
            &["-c", code],
            None,
        );
        r.assert_code(1);
        let records = log_records(&log);
        let refused: Vec<(String, Option<u64>)> = records
            .iter()
            .filter(|v| v["kind"] == "guard.refused")
            .map(|v| (v["what"].as_str().unwrap_or("").to_string(), v["line"].as_u64()))
            .collect();
        assert_eq!(
            refused,
            vec![
                ("import of 'os'".to_string(), Some(4)),
                ("opening '/etc/shadow'".to_string(), Some(9)),
                ("opening '/etc/shadow'".to_string(), Some(9)),
                ("opening '/etc/shadow'".to_string(), Some(9)),
                ("private attribute '_sys' of module 'collections'".to_string(), Some(13)),
            ],
            "{who:?}: {records:#?}"
        );
        let end = records.iter().find(|v| v["kind"] == "exec.end").unwrap();
        assert_eq!(end["guard_refused"], 5, "{end}");
        let shown = Run::from_output(ninewall(who).args(["audit", "show"]).arg(&log).output().unwrap());
        assert!(
            shown
                .stdout
                .contains("refused  by the interpreter guard: \"import of 'os'\" (line 4)"),
            "{shown:#?}"
        );

        // Refused before it runs: every problem, each recorded with its line.
        let log2 = dir.join("audit2.jsonl");
        let r = run(
            who,
            &profile("code_generate_new"),
            &["--audit-log", log2.to_str().unwrap()],
            &["-c", "x = 1\nprint(().__class__.__bases__)\ny = __builtins__"],
            None,
        );
        r.assert_code(1);
        assert!(
            r.stderr.contains("the code was refused before it ran")
                && r.stderr
                    .contains("line 2: the attribute '__bases__' is not allowed by profile 'code_generate_new'")
                && r.stderr.contains("line 3: the name '__builtins__' is not allowed"),
            "{r:#?}"
        );
        let lines: Vec<u64> = log_records(&log2)
            .iter()
            .filter(|v| v["kind"] == "guard.refused")
            .filter_map(|v| v["line"].as_u64())
            .collect();
        assert_eq!(lines, vec![2, 3]);
    }
}

#[test]
fn the_guard_takes_code_on_stdin_and_answers_interpreter_options() {
    let who = identities().into_iter().next().unwrap();
    let p = profile("code_generate_new");
    let r = run(who, &p, &[], &["-"], Some("import math\nprint(math.sqrt(81))\n"));
    r.assert_code(0);
    assert_eq!(r.stdout.trim(), "9.0");
    let r = run(who, &p, &[], &[], Some("print('no arguments: stdin')\n"));
    r.assert_code(0);
    assert_eq!(r.stdout.trim(), "no arguments: stdin");
    let r = run(who, &p, &[], &["--version"], None);
    r.assert_code(0);
    assert!(r.stdout.starts_with("Python 3.11."), "{r:#?}");
    let r = run(who, &p, &[], &["-m", "json.tool"], None);
    r.assert_code(2);
    assert!(
        r.stderr
            .contains("the option '-m' is not taken under the guard (profile 'code_generate_new')")
            && !r.stderr.contains("Traceback"),
        "{r:#?}"
    );
}

#[test]
fn the_workspace_rule_holds_through_every_door_a_profile_opens() {
    let p = write_profile(
        "guard-doors",
        "extends = \"code_generate_new\"\n[mbu]\nname = \"guard-doors\"\n[python]\nmodules = [\"os\", \"pathlib\", \"shutil\", \"tempfile\", \"io\"]\n",
    );
    let who = identities().into_iter().next().unwrap();
    // Inside the workspace and /tmp, every door works.
    let r = python(
        who,
        &p,
        "import os, pathlib, shutil, tempfile\n\
         fd = os.open('/work/a', os.O_WRONLY | os.O_CREAT, 0o600); os.write(fd, b'a'); os.close(fd)\n\
         pathlib.Path('/work/b').write_text('b')\n\
         shutil.copyfile('/work/a', '/work/c')\n\
         fd, name = tempfile.mkstemp(dir='/work'); os.close(fd)\n\
         with tempfile.TemporaryFile() as t:\n    t.write(b'x')\n\
         os.rename('/work/c', '/work/d'); os.remove('/work/d')\n\
         print(sorted(n for n in os.listdir('/work') if not n.startswith('tmp')))",
    );
    r.assert_code(0);
    assert_eq!(r.stdout.trim(), "['a', 'b']", "{r:#?}");
    // Outside, each door is refused by the guard, naming what was asked.
    for (code, says) in [
        (
            "import os\nos.open('/usr/lib/python3.11/nw-x', os.O_WRONLY | os.O_CREAT)",
            "opening '/usr/lib/python3.11/nw-x'",
        ),
        (
            "import os\nos.open('/usr/lib/python3.11/os.py', os.O_RDWR)",
            "opening '/usr/lib/python3.11/os.py'",
        ),
        (
            "import pathlib\npathlib.Path('/usr/lib/python3.11/nw-x').write_text('x')",
            "opening '/usr/lib/python3.11/nw-x'",
        ),
        (
            "import shutil\nopen('/work/a', 'w').close()\nshutil.copyfile('/work/a', '/usr/lib/python3.11/nw-x')",
            "shutil.copyfile of '/usr/lib/python3.11/nw-x'",
        ),
        (
            "import tempfile\ntempfile.mkstemp(dir='/usr/lib/python3.11')",
            "opening '/usr/lib/python3.11/tmp",
        ),
        (
            "import os\nos.remove('/usr/lib/python3.11/os.py')",
            "os.remove of '/usr/lib/python3.11/os.py'",
        ),
        (
            "import os\nopen('/work/a', 'w').close()\nos.rename('/work/a', '/usr/lib/python3.11/nw-x')",
            "os.rename of '/usr/lib/python3.11/nw-x'",
        ),
        ("open('../etc/passwd').read()", "opening '/etc/passwd'"),
        ("import os\nos.listdir('/etc')", "os.listdir of '/etc'"),
        (
            "import os\nos.execv('/usr/bin/python3.11', ['python3.11'])",
            "os (os.exec)",
        ),
    ] {
        let r = python(who, &p, code);
        assert!(
            r.code == 1 && r.stderr.contains(says) && r.stderr.contains("is not allowed by profile 'guard-doors'"),
            "{code}: {r:#?}"
        );
    }
}

/// User code of a profile that allows `os` can write to the guard's report
/// descriptor; past what the guard ever writes the supervisor stops reading
/// it and says so, and the run goes on.
#[test]
fn a_flood_of_the_guards_report_pipe_is_cut_and_said() {
    let p = write_profile(
        "guard-flood",
        "extends = \"code_generate_new\"\n[mbu]\nname = \"guard-flood\"\n[python]\nmodules = [\"os\"]\n",
    );
    let code = "import os\n\
                junk = b'{\"what\": \"forged\", \"line\": 1}\\n' * 2048\n\
                sent = 0\n\
                for fd in range(3, 32):\n    try:\n        while sent < (4 << 20):\n            sent += os.write(fd, junk)\n    except OSError:\n        pass\n\
                print('done', sent >= (1 << 20))";
    for who in identities() {
        let dir = scratch_dir("guard-flood");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let log = dir.join("audit.jsonl");
        let r = run(who, &p, &["--audit-log", log.to_str().unwrap()], &["-c", code], None);
        r.assert_code(0);
        assert_eq!(r.stdout.trim(), "done True", "{r:#?}");
        let records = log_records(&log);
        let end = records.iter().find(|v| v["kind"] == "exec.end").unwrap();
        assert_eq!(end["guard_reports_cut"], true, "{end}");
        // What was read before the cut is bounded like any report.
        let kept = records.iter().filter(|v| v["kind"] == "guard.refused").count();
        assert!(kept <= 100, "{kept} guard records");
    }
}
