// Package greet is the vendored dependency of the example.
package greet

// Hello greets name.
func Hello(name string) string { return "Hello, " + name }
