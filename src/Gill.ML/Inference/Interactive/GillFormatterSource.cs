namespace Gill.ML.Inference.Interactive;

/// <summary>
/// Formatters of GILL's inference types for .NET Interactive, found through <see cref="TypeFormatterSourceAttribute"/>:
/// HTML with images inline (PNG data URIs) and plain text as the fallback. The HTML ones use
/// <see cref="GillHtmlOptions.Default"/>.
/// </summary>
internal sealed class GillFormatterSource
{
    public const string HtmlMimeType = "text/html", PlainTextMimeType = "text/plain";

    /// <summary>Creates the formatters (called by .NET Interactive once per formatted type).</summary>
    public IEnumerable<object> CreateTypeFormatters()
    {
        yield return new ConventionFormatter(HtmlMimeType, GillHtml.TryRenderHtml);
        yield return new ConventionFormatter(PlainTextMimeType, GillHtml.TryRenderPlainText);
    }

    /// <summary>A formatter by convention: <see cref="MimeType"/> and <see cref="Format"/> are read by name.</summary>
    internal sealed class ConventionFormatter(string mimeType, Func<object, GillHtmlOptions, string?> render)
    {
        /// <summary>The MIME type this formatter writes.</summary>
        public string MimeType { get; } = mimeType;

        /// <summary>Writes <paramref name="instance"/> when it is a GILL type; false otherwise (other formatters are tried).</summary>
        public bool Format(object instance, TextWriter writer)
        {
            ArgumentNullException.ThrowIfNull(writer);
            if (instance is null) return false;
            var text = render(instance, GillHtmlOptions.Default);
            if (text is null) return false;
            writer.Write(text);
            return true;
        }
    }
}
