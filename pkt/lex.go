package pkt

import (
	"fmt"
	"strings"
)

// tokKind is the kind of a token of a script.
type tokKind uint8

const (
	tEOF      tokKind = iota
	tInt              // 12, -1
	tHex              // 0x1f
	tFloat            // .01, 0.200
	tWord             // socket, SOCK_STREAM, S, mss, 1460abc
	tString           // "text" (unquoted in text)
	tCommand          // `shell` (unquoted)
	tCode             // %{ code }% (trimmed)
	tOption           // --name=value: text is "name", val the raw value
	tEllipsis         // ...
	tPunct            // one character: < > . , : ( ) [ ] { } = | + * ~ -
)

func (k tokKind) String() string {
	switch k {
	case tEOF:
		return "end of file"
	case tInt, tHex:
		return "integer"
	case tFloat:
		return "number"
	case tWord:
		return "word"
	case tString:
		return "string"
	case tCommand:
		return "shell command"
	case tCode:
		return "%{ }% block"
	case tOption:
		return "option"
	case tEllipsis:
		return "..."
	}
	return "punctuation"
}

// token is one token with its position (1-based line and column).
type token struct {
	kind      tokKind
	text      string
	val       string // an option's value
	line, col int
	// spaced: whitespace or a comment came right before it. A flag
	// letter and its dot ("S."), or a number and its unit, are not
	// spaced; a packet's lone "." is.
	spaced bool
}

func (t token) String() string {
	switch t.kind {
	case tEOF:
		return "end of file"
	case tString:
		return fmt.Sprintf("%q", t.text)
	case tCommand:
		return "`" + t.text + "`"
	case tCode:
		return "%{ " + t.text + " }%"
	case tOption:
		return "--" + t.text + "=" + t.val
	}
	return fmt.Sprintf("%q", t.text)
}

// maxTokens bounds a script: the largest upstream scripts have a few
// thousand tokens.
const maxTokens = 1 << 20

// lex splits a script into tokens. Comments (// to the end of the line,
// /* */) and whitespace separate tokens and are dropped.
func lex(name, src string) ([]token, error) {
	l := lexer{name: name, src: src, line: 1, col: 1}
	for {
		t, err := l.next()
		if err != nil {
			return nil, err
		}
		l.toks = append(l.toks, t)
		if t.kind == tEOF {
			return l.toks, nil
		}
		if len(l.toks) > maxTokens {
			return nil, l.errAt(t.line, t.col, "script too long (more than %d tokens)", maxTokens)
		}
	}
}

type lexer struct {
	name      string
	src       string
	pos       int
	line, col int
	toks      []token
}

// Error is an error in a script, at a line and column.
type Error struct {
	File      string
	Line, Col int
	Msg       string
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s:%d:%d: %s", e.File, e.Line, e.Col, e.Msg)
}

func (l *lexer) errAt(line, col int, format string, a ...any) error {
	return &Error{File: l.name, Line: line, Col: col, Msg: fmt.Sprintf(format, a...)}
}

// advance moves past n bytes, counting lines.
func (l *lexer) advance(n int) {
	for _, c := range l.src[l.pos : l.pos+n] {
		if c == '\n' {
			l.line, l.col = l.line+1, 1
		} else {
			l.col++
		}
	}
	l.pos += n
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }
func isWordByte(c byte) bool {
	return c == '_' || isDigit(c) || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}
func isHex(c byte) bool { return isDigit(c) || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' }

func (l *lexer) next() (token, error) {
	spaced := l.pos == 0
	for l.pos < len(l.src) {
		rest := l.src[l.pos:]
		switch {
		case rest[0] == ' ' || rest[0] == '\t' || rest[0] == '\n' || rest[0] == '\r':
			l.advance(1)
		case strings.HasPrefix(rest, "//"):
			n := strings.IndexByte(rest, '\n')
			if n < 0 {
				n = len(rest)
			}
			l.advance(n)
		case strings.HasPrefix(rest, "/*"):
			n := strings.Index(rest[2:], "*/")
			if n < 0 {
				return token{}, l.errAt(l.line, l.col, "comment not closed (*/ missing)")
			}
			l.advance(n + 4)
		default:
			goto tok
		}
		spaced = true
	}
	return token{kind: tEOF, line: l.line, col: l.col, spaced: true}, nil
tok:
	t := token{line: l.line, col: l.col, spaced: spaced}
	rest := l.src[l.pos:]
	c := rest[0]
	n := 0
	switch {
	case strings.HasPrefix(rest, "%{"):
		end := strings.Index(rest, "}%")
		if end < 0 {
			return token{}, l.errAt(t.line, t.col, "%%{ block not closed (}%% missing)")
		}
		t.kind, t.text, n = tCode, strings.Trim(rest[2:end], " \t\r\n"), end+2
	case strings.HasPrefix(rest, "..."):
		t.kind, t.text, n = tEllipsis, "...", 3
	case strings.HasPrefix(rest, "--") && len(rest) > 2 && isWordByte(rest[2]):
		// --name=value: the value is everything up to the next space.
		n = 2
		for n < len(rest) && isWordByte(rest[n]) {
			n++
		}
		t.kind, t.text = tOption, rest[2:n]
		if n < len(rest) && rest[n] == '=' {
			v := n + 1
			for v < len(rest) && !strings.ContainsRune(" \t\r\n", rune(rest[v])) {
				v++
			}
			t.val, n = rest[n+1:v], v
		}
	case c == '"' || c == '`':
		// A quoted string; a backslash escapes the next character.
		var b strings.Builder
		i := 1
		for ; i < len(rest) && rest[i] != c; i++ {
			if rest[i] == '\\' && i+1 < len(rest) {
				i++
				switch rest[i] {
				case 'n':
					b.WriteByte('\n')
				case 't':
					b.WriteByte('\t')
				default:
					if c == '`' {
						b.WriteByte('\\')
					}
					b.WriteByte(rest[i])
				}
				continue
			}
			b.WriteByte(rest[i])
		}
		if i >= len(rest) {
			return token{}, l.errAt(t.line, t.col, "%c not closed", c)
		}
		t.kind, t.text, n = tString, b.String(), i+1
		if c == '`' {
			t.kind = tCommand
		}
	case c == '0' && len(rest) > 2 && (rest[1] == 'x' || rest[1] == 'X') && isHex(rest[2]):
		n = 2
		for n < len(rest) && isHex(rest[n]) {
			n++
		}
		t.kind, t.text = tHex, rest[:n]
	case isDigit(c) || c == '.' && len(rest) > 1 && isDigit(rest[1]) ||
		c == '-' && len(rest) > 1 && (isDigit(rest[1]) || rest[1] == '.' && len(rest) > 2 && isDigit(rest[2])):
		t.kind, n = l.number(rest)
		t.text = rest[:n]
	case isWordByte(c):
		for n < len(rest) && isWordByte(rest[n]) {
			n++
		}
		t.kind, t.text = tWord, rest[:n]
	case strings.ContainsRune("<>.,:()[]{}=|+*~-!&", rune(c)):
		t.kind, t.text, n = tPunct, rest[:1], 1
	default:
		r := []rune(rest)[0]
		return token{}, l.errAt(t.line, t.col, "unexpected character %q", r)
	}
	l.advance(n)
	return t, nil
}

// number scans -?[0-9]*(.[0-9]+)? and says whether it was an integer. A
// run of digits followed by letters or '_' is a word (1460abc), as in
// packetdrill's lexer; "0..." is the integer 0 and an ellipsis.
func (l *lexer) number(s string) (tokKind, int) {
	n := 0
	if s[0] == '-' {
		n++
	}
	for n < len(s) && isDigit(s[n]) {
		n++
	}
	kind := tInt
	if n+1 < len(s) && s[n] == '.' && isDigit(s[n+1]) {
		n++
		for n < len(s) && isDigit(s[n]) {
			n++
		}
		kind = tFloat
	}
	if kind == tInt && s[0] != '-' && n < len(s) && isWordByte(s[n]) {
		for n < len(s) && isWordByte(s[n]) {
			n++
		}
		return tWord, n
	}
	return kind, n
}
