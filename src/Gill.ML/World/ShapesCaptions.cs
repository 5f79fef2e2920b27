using System.Text.Json.Serialization;

namespace Gill.ML.World;

/// <summary>Which attributes of each object a caption states.</summary>
[Flags]
[JsonConverter(typeof(JsonStringEnumConverter<ShapesMentions>))]
public enum ShapesMentions
{
    /// <summary>Nothing.</summary>
    None = 0,
    /// <summary>The colour.</summary>
    Color = 1,
    /// <summary>The shape.</summary>
    Shape = 2,
    /// <summary>The size.</summary>
    Size = 4,
    /// <summary>The position (for two objects: their relation).</summary>
    Position = 8,
    /// <summary>Colour, shape, size and position.</summary>
    All = Color | Shape | Size | Position,
}

/// <summary>A caption and the attributes it states.</summary>
/// <param name="Text">The caption.</param>
/// <param name="Mentions">The object attributes the caption states (colour and shape always; the background is stated whenever it is not black).</param>
public readonly record struct ShapesCaption(string Text, ShapesMentions Mentions);

/// <summary>Writes captions for scenes from several templates with varied wording.</summary>
public static class ShapesCaptions
{
    /// <summary>Single-object templates stating every attribute; {a} becomes "a" or "an".</summary>
    private static readonly string[] FullSingle =
    [
        "{a} {size} {color} {shape} {pos}",
        "there is {a} {size} {color} {shape} {pos}",
        "{pos} there is {a} {size} {color} {shape}",
        "a picture of {a} {size} {color} {shape} {pos}",
        "{a} {size} {color} {shape} is {pos}",
    ];

    private static readonly (string Template, ShapesMentions Mentions)[] PartialSingle =
    [
        ("{a} {color} {shape}", ShapesMentions.Color | ShapesMentions.Shape),
        ("{a} {color} {shape} {pos}", ShapesMentions.Color | ShapesMentions.Shape | ShapesMentions.Position),
        ("{a} {size} {color} {shape}", ShapesMentions.Color | ShapesMentions.Shape | ShapesMentions.Size),
        ("there is {a} {color} {shape}", ShapesMentions.Color | ShapesMentions.Shape),
    ];

    /// <summary>
    /// Writes a caption for a scene. With probability <paramref name="partialFraction"/> the caption leaves out the
    /// size and/or position ("a red circle"); otherwise it states every attribute.
    /// </summary>
    public static ShapesCaption Describe(ShapesScene scene, double partialFraction, Random random) =>
        Describe(scene, partialFraction, new WorldRandom((ulong)random.NextInt64()));

    internal static ShapesCaption Describe(ShapesScene scene, double partialFraction, WorldRandom rng)
    {
        ArgumentNullException.ThrowIfNull(scene);
        var caption = scene.Objects.Count switch
        {
            1 => DescribeSingle(scene.Objects[0], partialFraction, rng),
            2 => DescribePair(scene.Objects[0], scene.Objects[1], partialFraction, rng),
            _ => throw new ArgumentException($"A scene has one or two objects, not {scene.Objects.Count}.", nameof(scene)),
        };
        return scene.Background == ShapesBackground.Black
            ? caption
            : caption with { Text = $"{caption.Text} on {ShapesWords.Article(ShapesWords.Background(scene.Background))} {ShapesWords.Background(scene.Background)} background" };
    }

    internal static ShapesCaption DescribeSingle(ShapesObject o, double partialFraction, WorldRandom rng)
    {
        if (rng.Chance(partialFraction))
        {
            var (t, m) = PartialSingle[rng.Next(PartialSingle.Length)];
            return new ShapesCaption(Fill(t, o, rng), m);
        }
        return new ShapesCaption(Fill(FullSingle[rng.Next(FullSingle.Length)], o, rng), ShapesMentions.All);
    }

    private static ShapesCaption DescribePair(ShapesObject first, ShapesObject second, double partialFraction, WorldRandom rng)
    {
        bool withSize = !rng.Chance(partialFraction);
        string a = Phrase(first, withSize, rng), b = Phrase(second, withSize, rng);
        var m = ShapesMentions.Color | ShapesMentions.Shape | ShapesMentions.Position | (withSize ? ShapesMentions.Size : 0);
        bool horizontal = first.Position == ShapePosition.Left;
        int k = rng.Next(4);
        string text = (horizontal, k) switch
        {
            (true, 0) => $"{a} to the left of {b}",
            (true, 1) => $"{b} to the right of {a}",
            (true, 2) => $"{a} next to {b}",
            (true, _) => $"{a} on the left and {b} on the right",
            (false, 0) => $"{a} above {b}",
            (false, 1) => $"{b} below {a}",
            (false, 2) => $"{b} under {a}",
            (false, _) => $"{a} at the top and {b} at the bottom",
        };
        // "next to" does not say which side each object is on.
        return new ShapesCaption(text, horizontal && k == 2 ? m & ~ShapesMentions.Position : m);
    }

    /// <summary>"a small red circle" / "an orange star".</summary>
    internal static string Phrase(ShapesObject o, bool withSize, WorldRandom rng)
    {
        string words = withSize
            ? $"{SizeWord(o.Size, rng)} {ShapesWords.Color(o.Color)} {ShapesWords.Shape(o.Shape)}"
            : $"{ShapesWords.Color(o.Color)} {ShapesWords.Shape(o.Shape)}";
        return $"{ShapesWords.Article(words)} {words}";
    }

    /// <summary>"small" or "little" / "large" or "big".</summary>
    internal static string SizeWord(ShapeSize size, WorldRandom rng) =>
        size == ShapeSize.Small ? (rng.Chance(0.7) ? "small" : "little") : (rng.Chance(0.7) ? "large" : "big");

    /// <summary>The position phrase with some variation ("in the middle" / "in the centre").</summary>
    internal static string PositionPhrase(ShapePosition p, WorldRandom rng) => p switch
    {
        ShapePosition.Centre => rng.Chance(0.5) ? "in the middle" : "in the centre",
        ShapePosition.Left => rng.Chance(0.7) ? "on the left" : "on the left side",
        ShapePosition.Right => rng.Chance(0.7) ? "on the right" : "on the right side",
        _ => ShapesWords.Position(p),
    };

    private static string Fill(string template, ShapesObject o, WorldRandom rng)
    {
        string size = SizeWord(o.Size, rng), pos = PositionPhrase(o.Position, rng);
        string text = template
            .Replace("{size}", size).Replace("{color}", ShapesWords.Color(o.Color))
            .Replace("{shape}", ShapesWords.Shape(o.Shape)).Replace("{pos}", pos);
        int i = text.IndexOf("{a}", StringComparison.Ordinal);
        if (i >= 0)
        {
            var rest = text[(i + 3)..].TrimStart();
            text = text[..i] + ShapesWords.Article(rest) + text[(i + 3)..];
        }
        return text;
    }

    /// <summary>
    /// Reads back the attributes a caption states about a single object (the inverse of the templates), or null
    /// when it is not a single-object caption of this world.
    /// </summary>
    public static (ShapeColor? Color, ShapeKind? Shape, ShapeSize? Size, ShapePosition? Position)? ParseSingle(string caption)
    {
        ArgumentNullException.ThrowIfNull(caption);
        var words = caption.Replace(",", " ").Split(' ', StringSplitOptions.RemoveEmptyEntries);
        ShapeColor? color = null; ShapeKind? shape = null; ShapeSize? size = null; ShapePosition? pos = null;
        int colors = 0, shapes = 0;
        for (int i = 0; i < words.Length; i++)
        {
            var w = words[i];
            if (i + 1 < words.Length && words[i + 1] == "background") { i++; continue; }
            foreach (var c in Enum.GetValues<ShapeColor>()) if (w == ShapesWords.Color(c)) { color = c; colors++; }
            foreach (var s in Enum.GetValues<ShapeKind>()) if (w == ShapesWords.Shape(s)) { shape = s; shapes++; }
            if (w is "small" or "little") size = ShapeSize.Small;
            if (w is "large" or "big") size = ShapeSize.Large;
            if (w is "left") pos = ShapePosition.Left;
            if (w is "right") pos = ShapePosition.Right;
            if (w is "top") pos = ShapePosition.Top;
            if (w is "bottom") pos = ShapePosition.Bottom;
            if (w is "middle" or "centre") pos = ShapePosition.Centre;
        }
        if (colors != 1 || shapes != 1) return null;
        return (color, shape, size, pos);
    }
}
