using System.Globalization;
using System.Net;
using System.Text;
using Gill.ML.Generation;
using SkiaSharp;
using static TorchSharp.torch;

namespace Gill.ML.Inference;

/// <summary>
/// Renders GILL prompts and results as self-contained HTML (images inline as data URIs, user text escaped) or as plain
/// text, for reports and notebooks. In .NET Interactive notebooks the same rendering is used automatically when a
/// <see cref="GillGenerationResult"/>, an output part or a <see cref="GillPrompt"/> is displayed.
/// </summary>
public static class GillHtml
{
    private static readonly CultureInfo Inv = CultureInfo.InvariantCulture;

    private const string BoxStyle = "font-family:system-ui,-apple-system,'Segoe UI',sans-serif;font-size:14px;line-height:1.4;border:1px solid #d0d7de;border-radius:6px;padding:8px 10px;margin:4px 0;max-width:960px";
    private const string FigureStyle = "display:inline-block;margin:4px 10px 4px 0;vertical-align:top;text-align:center";
    private const string CaptionStyle = "font-size:12px;color:#57606a;max-width:{0}px;overflow-wrap:anywhere";
    private const string CellStyle = "padding:2px 8px;border-bottom:1px solid #eaeef2;text-align:left";

    /// <summary>A result as HTML: its text and images in order, the decision of each [IMG] group with its probabilities, and the timings.</summary>
    /// <param name="result">The result (its generated images must not have been disposed).</param>
    /// <param name="options">Rendering options; null uses <see cref="GillHtmlOptions.Default"/>.</param>
    public static string Render(GillGenerationResult result, GillHtmlOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(result);
        var o = options ?? GillHtmlOptions.Default;
        var sb = new StringBuilder();
        sb.Append("<div class=\"gill-result\" style=\"").Append(BoxStyle).Append("\">");
        AppendParts(sb, result.Parts, o);
        if (o.ShowDecisions && result.ImageGroups.Count > 0) AppendDecisions(sb, result.ImageGroups);
        if (o.ShowTimings) AppendTimings(sb, result);
        sb.Append("</div>");
        return sb.ToString();
    }

    /// <summary>One output part as HTML (text, a retrieved image with its gallery id and score, or a generated image with its seed).</summary>
    public static string Render(GillOutputPart part, GillHtmlOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(part);
        var sb = new StringBuilder();
        AppendPart(sb, part, options ?? GillHtmlOptions.Default);
        return sb.ToString();
    }

    /// <summary>An interleaved prompt as HTML: its text parts and its images, in order.</summary>
    public static string Render(GillPrompt prompt, GillHtmlOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(prompt);
        var o = options ?? GillHtmlOptions.Default;
        var sb = new StringBuilder();
        sb.Append("<div class=\"gill-prompt\" style=\"").Append(BoxStyle).Append(";background:#f6f8fa\">");
        int image = 0;
        foreach (var part in prompt.Parts)
        {
            switch (part)
            {
                case GillTextInput t:
                    AppendText(sb, t.Text, "gill-text");
                    break;
                case GillImageInput i:
                    image++;
                    string label = i.GalleryId ?? i.Path ?? $"image {image}";
                    AppendFigure(sb, "gill-input-image", TryEncode(i, out var error), $"prompt image {image}", ShortId(label), label, o.ImageSize, error);
                    break;
            }
        }
        sb.Append("</div>");
        return sb.ToString();
    }

    /// <summary>A result as plain text: text, <c>[image: …]</c> markers for images, decisions and timings.</summary>
    public static string ToPlainText(GillGenerationResult result)
    {
        ArgumentNullException.ThrowIfNull(result);
        var sb = new StringBuilder();
        foreach (var part in result.Parts) sb.Append(PlainText(part));
        if (sb.Length == 0) sb.Append("(no output)");
        sb.AppendLine();
        foreach (var g in result.ImageGroups)
        {
            sb.Append(Inv, $"[IMG] group {g.GroupIndex}: {Decision(g.Decision)} (P(retrieve) {g.RetrieveProbability:F3}, P(generate) {g.GenerateProbability:F3}; {Source(g.Source)}");
            if (g.MaxRetrievalScore is { } best) sb.Append(Inv, $"; best retrieval score {best:F3}");
            sb.AppendLine(")");
        }
        sb.Append(TimingsText(result));
        return sb.ToString();
    }

    /// <summary>A prompt as plain text, each image as an <c>[image: …]</c> marker.</summary>
    public static string ToPlainText(GillPrompt prompt)
    {
        ArgumentNullException.ThrowIfNull(prompt);
        return string.Concat(prompt.Parts.Select(p => p switch
        {
            GillTextInput t => t.Text,
            GillImageInput i => $"[image: {i.GalleryId ?? i.Path ?? i.Describe()}]",
            _ => "",
        }));
    }

    /// <summary>An <c>&lt;img&gt;</c> element showing encoded image bytes inline (PNG and JPEG as they are, other formats converted to PNG).</summary>
    /// <param name="encodedImage">PNG, JPEG, GIF, BMP or WebP bytes.</param>
    /// <param name="alt">Alternative text (escaped).</param>
    /// <param name="width">Display width in CSS pixels (null: natural size).</param>
    /// <exception cref="InvalidDataException">The bytes are not a decodable image.</exception>
    public static string ImageTag(byte[] encodedImage, string alt, int? width = null)
    {
        ArgumentNullException.ThrowIfNull(encodedImage);
        return Img(DataUri(encodedImage), alt ?? "", width);
    }

    /// <summary>An <c>&lt;img&gt;</c> element showing a float RGB tensor [3,H,W] in [0,1] inline as PNG.</summary>
    public static string ImageTag(Tensor image, string alt, int? width = null)
    {
        ArgumentNullException.ThrowIfNull(image);
        return Img(PngDataUri(ImageTensorIO.ToPngBytes(image)), alt ?? "", width);
    }

    /// <summary>A captioned image (<c>&lt;figure&gt;</c>) from encoded image bytes, e.g. to show gallery or ground-truth images next to results.</summary>
    /// <param name="encodedImage">PNG, JPEG, GIF, BMP or WebP bytes.</param>
    /// <param name="caption">Caption (escaped).</param>
    /// <param name="width">Display width in CSS pixels.</param>
    /// <exception cref="InvalidDataException">The bytes are not a decodable image.</exception>
    public static string Figure(byte[] encodedImage, string caption, int width = 160)
    {
        ArgumentNullException.ThrowIfNull(encodedImage);
        if (width <= 0) throw new ArgumentOutOfRangeException(nameof(width), width, "width must be positive.");
        var sb = new StringBuilder();
        AppendFigure(sb, "gill-figure", DataUri(encodedImage), caption ?? "", caption ?? "", null, width, null);
        return sb.ToString();
    }

    /// <summary>A captioned image file (<c>&lt;figure&gt;</c>), embedded inline.</summary>
    /// <exception cref="FileNotFoundException">The file does not exist.</exception>
    public static string Figure(string imagePath, string caption, int width = 160)
    {
        ArgumentException.ThrowIfNullOrEmpty(imagePath);
        if (!File.Exists(imagePath)) throw new FileNotFoundException($"Image file '{imagePath}' does not exist.", imagePath);
        return Figure(File.ReadAllBytes(imagePath), caption, width);
    }

    /// <summary>HTML-escapes text (element content and attribute values).</summary>
    public static string Escape(string? text) => WebUtility.HtmlEncode(text ?? "");

    internal static string? TryRenderHtml(object instance, GillHtmlOptions options) => instance switch
    {
        GillGenerationResult r => Render(r, options),
        GillOutputPart p => Render(p, options),
        GillPrompt p => Render(p, options),
        _ => null,
    };

    internal static string? TryRenderPlainText(object instance, GillHtmlOptions options) => instance switch
    {
        GillGenerationResult r => ToPlainText(r),
        GillOutputPart p => PlainText(p),
        GillPrompt p => ToPlainText(p),
        _ => null,
    };

    internal static string PlainText(GillOutputPart part) => part switch
    {
        GillTextOutput t => t.Text,
        GillRetrievedImageOutput r => string.Create(Inv, $"[retrieved image: {r.Id}, score {r.Score:F3}, rank {r.Rank + 1}]"),
        GillGeneratedImageOutput g => g.Image.IsInvalid ? $"[generated image, seed {SeedText(g.Seed)}, disposed]"
            : string.Create(Inv, $"[generated image {g.Image.shape[^1]}×{g.Image.shape[^2]}, seed {SeedText(g.Seed)}]"),
        _ => $"[{part.GetType().Name}]",
    };

    private static void AppendParts(StringBuilder sb, IReadOnlyList<GillOutputPart> parts, GillHtmlOptions o)
    {
        sb.Append("<div class=\"gill-output\">");
        if (parts.Count == 0) sb.Append("<em style=\"color:#57606a\">(no output)</em>");
        bool inRow = false;
        foreach (var part in parts)
        {
            bool image = part is not GillTextOutput;
            if (image && !inRow) { sb.Append("<div class=\"gill-images\" style=\"margin:4px 0\">"); inRow = true; }
            if (!image && inRow) { sb.Append("</div>"); inRow = false; }
            AppendPart(sb, part, o);
        }
        if (inRow) sb.Append("</div>");
        sb.Append("</div>");
    }

    private static void AppendPart(StringBuilder sb, GillOutputPart part, GillHtmlOptions o)
    {
        switch (part)
        {
            case GillTextOutput t:
                AppendText(sb, t.Text, "gill-text");
                break;
            case GillRetrievedImageOutput r:
            {
                string? uri = null, error = null;
                var file = SafeResolve(o, r.Id);
                if (file is null) error = "not found in the gallery folder";
                else uri = TryFileDataUri(file, out error);
                string caption = string.Create(Inv, $"retrieved · {ShortId(r.Id)} · score {r.Score:F3} · rank {r.Rank + 1}");
                AppendFigure(sb, "gill-retrieved", uri, $"retrieved image {r.Id}", caption, r.Id, r.Rank == 0 ? o.ImageSize : Math.Max(1, o.ImageSize / 2), error);
                break;
            }
            case GillGeneratedImageOutput g:
            {
                string? uri = null, error = null;
                if (g.Image.IsInvalid) error = "image disposed with its result";
                else uri = PngDataUri(g.ToPng());
                string caption = $"generated · [IMG] group {g.GroupIndex} · seed {SeedText(g.Seed)}";
                AppendFigure(sb, "gill-generated", uri, $"generated image (group {g.GroupIndex})", caption, null, o.ImageSize, error);
                break;
            }
        }
    }

    private static void AppendText(StringBuilder sb, string text, string cssClass) =>
        sb.Append("<span class=\"").Append(cssClass).Append("\" style=\"white-space:pre-wrap\">").Append(Escape(text)).Append("</span>");

    private static void AppendFigure(StringBuilder sb, string cssClass, string? dataUri, string alt, string caption, string? title, int width, string? error)
    {
        sb.Append("<figure class=\"").Append(cssClass).Append("\" style=\"").Append(FigureStyle).Append('"');
        if (title is not null) sb.Append(" title=\"").Append(Escape(title)).Append('"');
        sb.Append('>');
        if (dataUri is not null) sb.Append(Img(dataUri, alt, width));
        else
            sb.Append(Inv, $"<div class=\"gill-missing\" style=\"width:{width}px;height:{width}px;display:flex;align-items:center;justify-content:center;background:#f6f8fa;border:1px dashed #afb8c1;color:#57606a;font-size:12px\">")
              .Append(Escape(error ?? "image unavailable")).Append("</div>");
        sb.Append("<figcaption style=\"").Append(string.Format(Inv, CaptionStyle, width)).Append("\">").Append(Escape(caption)).Append("</figcaption></figure>");
    }

    private static string Img(string dataUri, string alt, int? width)
    {
        var style = width is { } w ? string.Create(Inv, $" width=\"{w}\" style=\"width:{w}px;height:auto;image-rendering:pixelated;border:1px solid #d0d7de\"") : "";
        return $"<img src=\"{dataUri}\" alt=\"{Escape(alt)}\"{style}>";
    }

    private static void AppendDecisions(StringBuilder sb, IReadOnlyList<GillImageGroup> groups)
    {
        sb.Append("<table class=\"gill-decisions\" style=\"border-collapse:collapse;margin:6px 0;font-size:13px\"><thead><tr>");
        foreach (var h in new[] { "[IMG] group", "decision", "P(retrieve)", "P(generate)", "best retrieval score", "decided by" })
            sb.Append("<th style=\"").Append(CellStyle).Append(";font-weight:600\">").Append(Escape(h)).Append("</th>");
        sb.Append("</tr></thead><tbody>");
        foreach (var g in groups)
        {
            sb.Append("<tr>");
            Cell(sb, g.GroupIndex.ToString(Inv));
            sb.Append("<td style=\"").Append(CellStyle).Append(";font-weight:600\">").Append(Decision(g.Decision)).Append("</td>");
            ProbabilityCell(sb, g.RetrieveProbability, "#0969da");
            ProbabilityCell(sb, g.GenerateProbability, "#8250df");
            Cell(sb, g.MaxRetrievalScore is { } s ? s.ToString("F3", Inv) : "—");
            Cell(sb, Source(g.Source));
            sb.Append("</tr>");
        }
        sb.Append("</tbody></table>");
    }

    private static void Cell(StringBuilder sb, string text) => sb.Append("<td style=\"").Append(CellStyle).Append("\">").Append(Escape(text)).Append("</td>");

    private static void ProbabilityCell(StringBuilder sb, double p, string colour)
    {
        double width = double.IsFinite(p) ? Math.Clamp(p, 0, 1) * 60 : 0;
        sb.Append("<td style=\"").Append(CellStyle).Append("\">")
          .Append(Inv, $"<span style=\"display:inline-block;width:60px;height:8px;background:#eaeef2;margin-right:6px;vertical-align:middle\"><span style=\"display:block;width:{width:F1}px;height:8px;background:{colour}\"></span></span>")
          .Append(p.ToString("F3", Inv)).Append("</td>");
    }

    private static void AppendTimings(StringBuilder sb, GillGenerationResult r) =>
        sb.Append("<div class=\"gill-timings\" style=\"font-size:12px;color:#57606a;margin-top:4px\">").Append(Escape(TimingsText(r))).Append("</div>");

    private static string TimingsText(GillGenerationResult r)
    {
        var t = r.Timings;
        return string.Create(Inv,
            $"{r.TokenIds.Count} tokens generated after a {r.PromptLength}-position prompt; {r.GeneratorCalls} generator call(s); " +
            $"visual encoding {Ms(t.VisualEncoding)}, language model {Ms(t.LanguageModel)}, retrieval {Ms(t.Retrieval)}, generation {Ms(t.Generation)}, total {Ms(t.Total)}");
    }

    private static string Ms(TimeSpan t) => t.TotalMilliseconds.ToString("F1", Inv) + " ms";

    private static string Decision(GillImageDecision d) => d == GillImageDecision.Retrieve ? "retrieve" : "generate";

    private static string Source(GillDecisionSource s) => s switch
    {
        GillDecisionSource.Classifier => "decision classifier",
        GillDecisionSource.Threshold => "retrieval-score threshold",
        _ => "fixed mode",
    };

    private static string SeedText(long? seed) => seed?.ToString(Inv) ?? "none";

    private static string ShortId(string id)
    {
        var name = Path.GetFileName(id);
        return string.IsNullOrEmpty(name) ? id : name;
    }

    private static string? SafeResolve(GillHtmlOptions o, string id)
    {
        try
        {
            return o.ResolveGalleryFile(id);
        }
        catch (Exception e) when (e is ArgumentException or IOException or UnauthorizedAccessException or NotSupportedException)
        {
            return null;
        }
    }

    private static string? TryFileDataUri(string file, out string? error)
    {
        error = null;
        try
        {
            return DataUri(File.ReadAllBytes(file));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or InvalidDataException)
        {
            error = e.Message;
            return null;
        }
    }

    private static string? TryEncode(GillImageInput input, out string? error)
    {
        error = null;
        try
        {
            if (input.Path is not null) return DataUri(File.ReadAllBytes(input.Path));
            if (input.EncodedBytes is { } bytes) return DataUri(bytes.ToArray());
            if (input.Tensor is not null) return PngDataUri(ImageTensorIO.ToPngBytes(input.Tensor));
            using var t = ImageTensorIO.FromMLImage(input.MLImage!);
            return PngDataUri(ImageTensorIO.ToPngBytes(t));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or InvalidDataException or ArgumentException or ObjectDisposedException)
        {
            error = e.Message;
            return null;
        }
    }

    private static string PngDataUri(byte[] png) => "data:image/png;base64," + Convert.ToBase64String(png);

    /// <summary>PNG and JPEG bytes as they are; anything else SkiaSharp decodes is converted to PNG.</summary>
    private static string DataUri(byte[] bytes)
    {
        if (bytes.Length >= 8 && bytes[0] == 0x89 && bytes[1] == (byte)'P' && bytes[2] == (byte)'N' && bytes[3] == (byte)'G') return PngDataUri(bytes);
        if (bytes.Length >= 3 && bytes[0] == 0xFF && bytes[1] == 0xD8 && bytes[2] == 0xFF) return "data:image/jpeg;base64," + Convert.ToBase64String(bytes);
        using var bitmap = GillImages.DecodeBytes(bytes);
        using var image = SKImage.FromBitmap(bitmap);
        using var png = image.Encode(SKEncodedImageFormat.Png, 100) ?? throw new InvalidDataException("The image could not be encoded as PNG.");
        return PngDataUri(png.ToArray());
    }
}
