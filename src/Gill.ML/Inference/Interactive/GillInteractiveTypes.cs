using Gill.ML.Inference.Interactive;

namespace Gill.ML.Inference;

// The notebook formatters of the inference types (see GillFormatterSource) and their HTML/plain-text renderings.

[TypeFormatterSource(typeof(GillFormatterSource))]
public sealed partial class GillGenerationResult
{
    /// <summary>
    /// This result as self-contained HTML: text (escaped), retrieved images (with gallery id, score and rank) and generated
    /// images (with seed) inline as data URIs, each [IMG] group's decision with its probabilities, and the timings.
    /// </summary>
    /// <param name="options">Rendering options (gallery folder for retrieved images, image size); null uses <see cref="GillHtmlOptions.Default"/>.</param>
    public string ToHtml(GillHtmlOptions? options = null) => GillHtml.Render(this, options);

    /// <summary>This result as plain text: text, <c>[image: …]</c> markers for images, decisions and timings.</summary>
    public string ToPlainText() => GillHtml.ToPlainText(this);
}

[TypeFormatterSource(typeof(GillFormatterSource))]
public abstract partial record GillOutputPart
{
    /// <summary>This part as HTML (images inline as data URIs).</summary>
    public string ToHtml(GillHtmlOptions? options = null) => GillHtml.Render(this, options);
}

[TypeFormatterSource(typeof(GillFormatterSource))]
public sealed partial class GillPrompt
{
    /// <summary>This prompt as HTML: text parts escaped, images inline as data URIs.</summary>
    public string ToHtml(GillHtmlOptions? options = null) => GillHtml.Render(this, options);
}
