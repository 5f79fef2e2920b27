namespace Gill.ML.Inference.Interactive;

/// <summary>
/// Names the formatter source of a type for .NET Interactive (Polyglot / Jupyter notebooks). .NET Interactive finds this
/// attribute by its name and reads <see cref="FormatterSourceType"/> and <see cref="PreferredMimeTypes"/> by reflection,
/// so the library needs no reference to Microsoft.DotNet.Interactive: the source's <c>CreateTypeFormatters()</c> returns
/// objects with a <c>MimeType</c> property and a <c>bool Format(object instance, TextWriter writer)</c> method.
/// </summary>
[AttributeUsage(AttributeTargets.Class, AllowMultiple = false, Inherited = true)]
internal sealed class TypeFormatterSourceAttribute : Attribute
{
    public TypeFormatterSourceAttribute(Type formatterSourceType)
    {
        FormatterSourceType = formatterSourceType;
    }

    /// <summary>The type whose public parameterless constructor creates the formatter source.</summary>
    public Type FormatterSourceType { get; }

    /// <summary>MIME types a notebook produces for the attributed type, richest first.</summary>
    public string[] PreferredMimeTypes { get; set; } = [GillFormatterSource.HtmlMimeType, GillFormatterSource.PlainTextMimeType];
}
