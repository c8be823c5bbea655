package maint

// logfOrDiscard returns logf, or a function that drops every line when
// logf is nil: the Logf of every Options is optional.
func logfOrDiscard(logf func(format string, args ...any)) func(format string, args ...any) {
	if logf == nil {
		return func(string, ...any) {}
	}
	return logf
}
